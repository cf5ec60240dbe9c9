"""Prometheus metrics of one server (its own registry: two servers in one process, as in the
tests, do not share counters). Labels carry endpoints, status codes and expert names only,
never a key or a prompt."""

from __future__ import annotations

import prometheus_client as prom

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self):
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("leeroo_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                     registry=r)
        self.latency = prom.Histogram("leeroo_request_seconds", "request latency, seconds", ["endpoint"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.chosen = prom.Counter("leeroo_expert_chosen", "queries routed to each expert", ["expert"], registry=r)
        self.answered = prom.Counter("leeroo_expert_answered", "answers given by each expert", ["expert"], registry=r)
        self.failures = prom.Counter("leeroo_expert_failures", "calls to an expert that failed", ["expert"], registry=r)
        self.spend = prom.Counter("leeroo_spend_usd", "USD spent at list prices (answers' token counts)", ["expert"],
                                  registry=r)
        self.batch = prom.Histogram("leeroo_route_batch_size", "queries per scoring batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = prom.Histogram("leeroo_route_batch_seconds", "scoring time per batch (the worker's)",
                                            buckets=LATENCY_BUCKETS, registry=r)

    def scored(self, size: int, seconds: float) -> None:
        """A scoring batch ran (Batcher.on_batch)."""
        self.batch.observe(size)
        self.batch_seconds.observe(seconds)

    def text(self) -> bytes:
        return prom.generate_latest(self.registry)

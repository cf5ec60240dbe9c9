"""The OpenAI-compatible HTTP server (FastAPI on uvicorn).

    POST /v1/chat/completions  model = a budget (serving/budgets.py), stream or not: the
                               router picks the expert, the expert answers; the response's
                               `model` names the expert, `leeroo` carries the decision
    POST /v1/route             the same request, routed only (no expert is called)
    GET  /v1/models            budget ids to start from;  GET /health;  GET /metrics

Routing requests that arrive together are scored as one batch (serving/batching.py). Errors
use OpenAI's schema {"error": {message, type, param, code}}. With API keys configured, every
path but /health needs `Authorization: Bearer <key>`, checked before anything else runs.
An expert-mode server (`orch=None`) serves one live expert directly, like a vLLM endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import math
import time
import uuid

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from leeroo_jax.experts.chat import BackendError, BadMessages, as_messages
from leeroo_jax.serving import budgets
from leeroo_jax.serving.api import NoExpert, Orchestrator, Routing, in_turn
from leeroo_jax.serving.backends import Backends
from leeroo_jax.serving.batching import Batcher, ShuttingDown
from leeroo_jax.serving.budgets import BadBudget
from leeroo_jax.serving.metrics import Metrics

PATHS = ("/v1/chat/completions", "/v1/route", "/v1/models", "/health", "/metrics")


@dataclasses.dataclass(frozen=True)
class Settings:
    api_keys: frozenset = frozenset()  # empty: no auth
    max_batch: int = 64  # routing requests scored in one batch at most
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_prompt_chars: int = 32_000  # a longer chat is refused (413)
    max_tokens: int = 256  # default and ceiling of a request's max_tokens
    request_timeout_s: float = 120.0  # a request still running after this gets 504


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}},
                            status_code=self.status)


class Service:
    """What the handlers share: the router, the experts, the settings, the metrics."""

    def __init__(self, orch: Orchestrator | None, backends: Backends, settings: Settings = Settings()):
        if orch is None and len(backends.by_expert) != 1:
            raise ValueError("an expert-mode server serves exactly one expert")
        self.orch, self.backends, self.settings, self.metrics = orch, backends, settings, Metrics()
        self.router = Batcher(self._route_batch, settings.max_batch, settings.max_wait_ms / 1000,
                              on_batch=self.metrics.scored)

    def _route_batch(self, items: list) -> list[Routing]:
        return self.orch.route([m for m, _ in items], [s for _, s in items])

    # --- one request, checked --------------------------------------------------------------------

    def parse(self, raw: bytes) -> tuple[budgets.BudgetSpec | None, list[dict], int, bool]:
        """(budget, messages, max_tokens, stream) of a request body, or an ApiError."""
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})", "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", "invalid_json")
        spec = None
        if self.orch is not None:
            try:
                spec = budgets.parse(str(body.get("model", "")))
            except BadBudget:
                raise ApiError(404, f"unknown model {body.get('model')!r}; the model picks the budget: one of "
                                    f"{', '.join(budgets.FORMS)} (e.g. leeroo-cap-0.0002)", "model_not_found") from None
        try:
            messages = as_messages(body.get("messages"))
        except BadMessages as e:
            raise ApiError(400, str(e), "invalid_messages") from None
        chars = sum(len(m["content"]) for m in messages)
        if chars > self.settings.max_prompt_chars:
            raise ApiError(413, f"the messages hold {chars} characters; this server takes at most "
                                f"{self.settings.max_prompt_chars}", "prompt_too_long")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        max_tokens = self.settings.max_tokens if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", "invalid_max_tokens")
        return spec, messages, min(max_tokens, self.settings.max_tokens), bool(body.get("stream", False))

    async def route(self, spec, messages) -> Routing | None:
        if self.orch is None:
            return None
        try:
            self.orch.check([messages], spec)  # a cap below the cheapest expert, a cost1k below any routing
        except BadBudget as e:
            raise ApiError(400, str(e), "budget_too_low") from None
        try:
            routing = await self.router.submit((messages, spec))
        except ShuttingDown as e:
            raise ApiError(503, str(e), "shutting_down", "server_error") from None
        self.metrics.chosen.labels(routing.expert).inc()
        return routing

    async def answer(self, routing: Routing | None, spec, ask):
        """(expert, answer, failed) of api.in_turn over the budget's experts (expert mode: the
        one expert, once), counting failures; no expert left is a 502."""
        def pick(failed: list[str]) -> str | None:
            if routing is None:
                return None if failed else next(iter(self.backends.by_expert))
            return self.orch.pick(routing, spec, failed)

        try:
            return await in_turn(pick, ask, lambda expert: self.metrics.failures.labels(expert).inc())
        except NoExpert as e:
            raise ApiError(502, str(e), "upstream_unavailable", "server_error") from None

    def spent(self, expert: str, prompt_tokens: int, completion_tokens: int) -> float:
        pool = self.orch.pool if self.orch is not None else None
        if pool is None:
            return 0.0
        e = pool.experts[pool.index(expert)]
        usd = e.usd(prompt_tokens, completion_tokens)
        self.metrics.spend.labels(expert).inc(usd)
        return usd


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _extra(routing: Routing | None, expert: str, failed: list[str], spent: float) -> dict:
    return {"routing": routing.to_json() if routing else None, "answered_by": expert, "failed": failed,
            "spent_usd": spent}


def create_app(service: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await service.router.close()  # queued requests are answered, new ones refused
        await service.backends.aclose()
        print("stopped: every accepted request was answered", flush=True)

    app = FastAPI(title="leeroo_jax", lifespan=lifespan)
    keys = [k.encode() for k in service.settings.api_keys]

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        label = path if path in PATHS else "other"
        start = time.perf_counter()
        if keys and path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:].encode() if given.lower().startswith("bearer ") else b""
            if not any(hmac.compare_digest(token, k) for k in keys):
                response = ApiError(401, "missing or invalid API key: send Authorization: Bearer <key>",
                                    "invalid_api_key", "authentication_error").response()
                service.metrics.requests.labels(label, "401").inc()
                return response
        try:
            response = await asyncio.wait_for(call_next(request), service.settings.request_timeout_s)
        except asyncio.TimeoutError:
            response = ApiError(504, f"the request took longer than {service.settings.request_timeout_s:g} s",
                                "timeout", "server_error").response()
        service.metrics.requests.labels(label, str(response.status_code)).inc()
        service.metrics.latency.labels(label).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request, e: ApiError):
        return e.response()

    @app.get("/health")
    async def health():
        b = service.backends
        return {"status": "ok", "experts": b.kinds, "excluded": b.excluded}

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        if service.orch is None:
            ids = list(service.backends.by_expert)
        else:
            orch = service.orch
            val_cost = orch.run.data.cost[orch.run.data.rows("val")].mean(0)  # spend like expert e, on VAL
            ids = [f"{budgets.PREFIX}-cost1k-{val_cost[e] * 1e3:.4g}" for e in np.flatnonzero(orch.available)]
            ids = list(dict.fromkeys(ids)) + [f"{budgets.PREFIX}-lambda-0", f"{budgets.PREFIX}-quality-0.8"]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "leeroo_jax"}
                                           for i in ids]}

    @app.post("/v1/route")
    async def route(request: Request):
        if service.orch is None:
            raise ApiError(404, "an expert-mode server does not route", "not_found")
        spec, messages, _, _ = service.parse(await request.body())
        routing = await service.route(spec, messages)
        return {"object": "leeroo.routing", "routing": routing.to_json()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if not service.backends.by_expert:
            raise ApiError(404, "this server routes only (--route-only): POST /v1/route", "not_found")
        spec, messages, max_tokens, stream = service.parse(await request.body())
        routing = await service.route(spec, messages)
        if stream:
            return await _stream(service, routing, spec, messages, max_tokens)
        expert, done, failed = await service.answer(
            routing, spec, lambda expert: service.backends.by_expert[expert].complete(messages, max_tokens))
        service.metrics.answered.labels(expert).inc()
        spent = service.spent(expert, done.prompt_tokens, done.completion_tokens)
        return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": expert,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                             "finish_reason": done.finish_reason}],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens},
                "leeroo": _extra(routing, expert, failed, spent)}

    return app


async def _stream(service: Service, routing, spec, messages, max_tokens) -> StreamingResponse:
    """Server-sent events: the first delta is awaited here, so an expert that fails before it
    is replaced by the next one (and none left is a 502, not a broken stream)."""
    async def opened(expert: str):
        deltas = service.backends.by_expert[expert].stream(messages, max_tokens).__aiter__()
        try:
            return await deltas.__anext__(), deltas
        except StopAsyncIteration:
            return "", deltas

    expert, (first, deltas), failed = await service.answer(routing, spec, opened)
    cid, created = _completion_id(), int(time.time())

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": expert,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    async def events():
        text = first
        yield event({"role": "assistant", "content": first})
        try:
            async for piece in deltas:
                text += piece
                yield event({"content": piece})
        except BackendError:  # mid-stream: the client has part of an answer; end it plainly
            service.metrics.failures.labels(expert).inc()
        service.metrics.answered.labels(expert).inc()
        prompt_tokens = math.ceil(sum(len(m["content"]) for m in messages) / 4)  # a stream has no usage: the pool's rule
        spent = service.spent(expert, prompt_tokens, math.ceil(len(text) / 4))
        yield event({}, "stop", leeroo=_extra(routing, expert, failed, spent))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")

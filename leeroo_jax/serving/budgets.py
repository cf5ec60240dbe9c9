"""Budgets as a client names them: the OpenAI `model` string carries the router's budget,
as RouteLLM's `router-mf-0.116` carries its threshold.

    leeroo-cap-0.0002     at most 0.0002 USD for this query (the best expert that fits)
    leeroo-lambda-0.5     argmax_e p - lambda * cost (cost in USD per query)
    leeroo-quality-0.8    the cheapest expert with p >= 0.8, else the best
    leeroo-cost1k-1.0     1.0 USD per 1k queries on average: lambda fitted on the run's VAL
                          questions to spend that (orchestrator/calibrate.py), then fixed

cost1k is a per-query rule whose value was decided before any served outcome is seen; a
served stream of queries unlike VAL spends more or less than the target.
"""

from __future__ import annotations

import dataclasses
import math

PREFIX = "leeroo"
KINDS = ("cap", "lambda", "quality", "cost1k")
FORMS = tuple(f"{PREFIX}-{k}-<{v}>" for k, v in zip(
    KINDS, ("USD per query", "lambda >= 0", "tau in [0, 1]", "USD per 1k queries")))


class BadBudget(ValueError):
    """A model string or budget that names no budget; the message lists the valid forms."""


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
    kind: str  # one of KINDS
    value: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BadBudget(f"unknown budget kind {self.kind!r}; use one of {', '.join(FORMS)}")
        if not math.isfinite(self.value) or self.value < 0:
            raise BadBudget(f"budget {self.kind} must be a finite number >= 0, got {self.value}")
        if self.kind == "quality" and self.value > 1:
            raise BadBudget(f"quality target tau must be in [0, 1], got {self.value}")

    @property
    def model_id(self) -> str:
        return f"{PREFIX}-{self.kind}-{self.value:g}"


def parse(budget: "str | BudgetSpec") -> BudgetSpec:
    """A BudgetSpec from `leeroo-<kind>-<value>` (the `leeroo-` prefix optional) or a BudgetSpec."""
    if isinstance(budget, BudgetSpec):
        return budget
    if not isinstance(budget, str):
        raise BadBudget(f"a budget is a string like {FORMS[0]} or a BudgetSpec, not {type(budget).__name__}")
    raw = budget.strip()
    body = raw[len(PREFIX) + 1:] if raw.startswith(PREFIX + "-") else raw
    kind, _, value = body.partition("-")
    if kind not in KINDS or not value:
        raise BadBudget(f"unknown model {raw!r}; use one of {', '.join(FORMS)} (e.g. {PREFIX}-cap-0.0002)")
    try:
        number = float(value)
    except ValueError:
        raise BadBudget(f"model {raw!r}: {value!r} is not a number; use one of {', '.join(FORMS)}") from None
    return BudgetSpec(kind, number)

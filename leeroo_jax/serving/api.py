"""The Python API: a trained run loaded once, routing any query under a budget, and answering
it with the chosen expert when the experts have backends.

    from leeroo_jax import Orchestrator
    orch = Orchestrator.from_run("checkpoints/mmlu")
    orch.route(["Which planet has the most moons?"], budget="leeroo-cap-0.0002")[0].expert
    orch.get_response("What is 7 * 8?", budget="leeroo-cost1k-1.0").text   # needs backends

A query is free text, a chat (a list of {"role", "content"}: the last user message is what is
routed, every message is what is priced) or an `mmlu.Question`. Budgets: serving/budgets.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from typing import Awaitable, Callable, Mapping, Sequence, TypeVar

import numpy as np

from leeroo_jax.data import mmlu
from leeroo_jax.data.pool import query_text
from leeroo_jax.errors import ConfigError
from leeroo_jax.experts.chat import BackendError, ChatBackend, Completion, as_messages
from leeroo_jax.jobs.runs import Run, load_run
from leeroo_jax.orchestrator import calibrate, select
from leeroo_jax.serving import budgets
from leeroo_jax.serving.budgets import BadBudget, BudgetSpec
from leeroo_jax.serving.scoring import Scorer


class NoExpert(RuntimeError):
    """Every expert the budget allows failed or is unavailable."""

    def __init__(self, message: str, failed: Sequence[str] = ()):
        super().__init__(message)
        self.failed = tuple(failed)


T = TypeVar("T")


async def in_turn(pick: Callable[[list[str]], str | None], ask: Callable[[str], Awaitable[T]],
                  on_failure: Callable[[str], None] = lambda expert: None) -> tuple[str, T, list[str]]:
    """Ask the expert `pick([])` names; when it fails (BackendError), the one `pick(failed)`
    names, and so on: (the expert that answered, its answer, those that failed before it).
    NoExpert, carrying the failed ones, when `pick` names none."""
    failed: list[str] = []
    while (expert := pick(failed)) is not None:
        try:
            return expert, await ask(expert), failed
        except BackendError:
            failed.append(expert)
            on_failure(expert)
    raise NoExpert(f"no expert within the budget could answer (failed: {', '.join(failed) or 'none'})", failed)


@dataclasses.dataclass(frozen=True)
class Routing:
    expert: str  # the chosen expert
    p: dict[str, float]  # every expert's calibrated p of answering well
    cost_usd: float  # the choice's estimated cost
    costs: dict[str, float]  # every expert's estimated cost, USD
    budget: str  # as a model id, e.g. leeroo-cap-0.0002
    subject: str  # the query's subject: given, or voted by its nearest TRAIN questions

    def to_json(self) -> dict:
        return {"expert": self.expert, "p": round(self.p[self.expert], 6), "cost_usd": self.cost_usd,
                "budget": self.budget, "subject": self.subject,
                "p_all": {k: round(v, 6) for k, v in self.p.items()}}


@dataclasses.dataclass(frozen=True)
class Response:
    text: str
    expert: str  # the expert that answered (the routed one, or the next best if it failed)
    routing: Routing
    completion: Completion
    cost_usd: float  # spent: the answer's token counts at the expert's list prices
    failed: tuple[str, ...] = ()  # experts tried first that failed


def _texts(query) -> tuple[str, str, str | None]:
    """(routed text, priced text, subject) of a query."""
    if isinstance(query, mmlu.Question):
        return query_text(query), query_text(query), query.subject
    messages = as_messages(query)
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1], "\n".join(m["content"] for m in messages), None


class Orchestrator:
    """A run's router with the experts that can answer (`backends`, by expert name)."""

    def __init__(self, run: Run, backends: Mapping[str, ChatBackend] | None = None,
                 batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)):
        self.run, self.pool = run, run.data.pool
        self.names = list(self.pool.names)
        self.scorer = Scorer(run, batch_sizes)
        self.backends = dict(backends or {})
        unknown = sorted(set(self.backends) - set(self.names))
        if unknown:
            raise ConfigError(f"backends for {unknown} name no expert of the run's pool ({', '.join(self.names)})")
        # Without backends every expert can be routed to (route only); with them, only those.
        self.available = np.array([backends is None or n in self.backends for n in self.names])
        self._cost1k: dict[float, select.Budget] = {}

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, backends: Mapping[str, ChatBackend] | None = None, *,
                 mesh: dict | None = None, records: str = "", batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)):
        """Load a finished training run once (its best checkpoint, calibration and data)."""
        return cls(load_run(run_dir, records=records, mesh=mesh), backends, batch_sizes)

    def warmup(self) -> int:
        """Compile every program a request can need: the scoring shapes and the VAL calibration
        behind cost1k budgets (each new cost1k value then only runs it). Returns the shapes."""
        n = self.scorer.warmup()
        lo, hi = calibrate.feasible_range(self.run.data.cost[self.run.data.rows("val")], self.available)
        self._calibrated((lo + hi) / 2)
        return n

    # --- budgets -------------------------------------------------------------------------------

    def budget(self, spec: str | BudgetSpec) -> select.Budget:
        """The kernel's budget for a spec; cost1k fitted once on VAL (per target) and kept."""
        spec = budgets.parse(spec)
        if spec.kind == "cap":
            return select.Budget.cap(spec.value)
        if spec.kind == "lambda":
            return select.Budget.tradeoff(spec.value)
        if spec.kind == "quality":
            return select.Budget.quality(spec.value)
        if spec.value not in self._cost1k:
            self._cost1k[spec.value] = self._calibrated(spec.value / 1000)
        return self._cost1k[spec.value]

    def _calibrated(self, target: float) -> select.Budget:
        """lambda whose VAL choices among the available experts spend `target` USD per query on
        average (above what any routing spends: lambda 0, the best p)."""
        d = self.run.data
        val = d.rows("val")
        cost = d.cost[val].astype(np.float32)
        lo, hi = calibrate.feasible_range(cost, self.available)
        if target < lo:
            cheap = self.names[int(np.argmin(np.where(self.available, cost.mean(0), np.inf)))]
            raise BadBudget(f"cost1k {target * 1e3:.4g} USD per 1k queries is below the cheapest routing "
                            f"({lo * 1e3:.4g}: {cheap} on every VAL query); use {budgets.PREFIX}-cost1k-{lo * 1e3:.4g} or more")
        if target >= hi:
            return select.Budget.tradeoff(0.0)
        return calibrate.calibrate(self._val_p, cost, target, "tradeoff", self.available).budget()

    @functools.cached_property
    def _val_p(self) -> np.ndarray:
        """The run's calibrated p [N_val, E] on VAL: predicted once, for every cost1k target."""
        return self.run.predict(self.run.data.rows("val"))

    def _check_cap(self, spec: BudgetSpec, cost: np.ndarray) -> None:
        """A cap below the cheapest available expert of some query is the caller's error."""
        if spec.kind != "cap":
            return
        cheapest = np.where(self.available, cost, np.inf).min(1)  # [N]
        worst = int(np.argmax(cheapest))
        if spec.value < cheapest[worst]:
            e = int(np.argmin(np.where(self.available, cost[worst], np.inf)))
            raise BadBudget(f"cap {spec.value:g} USD is below the cheapest available expert for this query "
                            f"({self.names[e]}: {cost[worst, e]:.3g} USD); raise the cap to at least that")

    # --- routing -------------------------------------------------------------------------------

    @staticmethod
    def _specs(queries: Sequence, budget) -> list[BudgetSpec]:
        specs = [budgets.parse(b) for b in budget] if not isinstance(budget, (str, BudgetSpec)) else \
            [budgets.parse(budget)] * len(queries)
        if len(specs) != len(queries):
            raise ValueError(f"{len(specs)} budgets for {len(queries)} queries")
        return specs

    def _checked(self, queries: Sequence, specs: list[BudgetSpec]):
        """(routed texts, subjects, cost [N, E], kernel budgets); BadBudget for a budget no
        routing can meet (a cap below a query's cheapest available expert, a cost1k below the
        cheapest routing on VAL)."""
        parsed = [_texts(q) for q in queries]
        routed, priced, subjects = (list(x) for x in zip(*parsed)) if parsed else ([], [], [])
        cost = self.pool.text_costs(priced)  # [N, E]
        for i, spec in enumerate(specs):
            self._check_cap(spec, cost[i:i + 1])
        return routed, subjects, cost, [self.budget(s) for s in specs]

    def check(self, queries: Sequence, budget) -> None:
        """The budget errors `route` would raise, without scoring anything (a server answers 400)."""
        self._checked(queries, self._specs(queries, budget))

    def route(self, queries: Sequence, budget: str | BudgetSpec | Sequence[str | BudgetSpec]) -> list[Routing]:
        """One Routing per query; `budget` one spec for all, or one per query (a server's batch)."""
        specs = self._specs(queries, budget)
        routed, subjects, cost, kernel = self._checked(queries, specs)
        p, subj = self.scorer.p(routed, subjects)
        choice = np.empty(len(queries), np.int32)
        for key in dict.fromkeys((b.mode, float(b.value)) for b in kernel):  # queries sharing a budget: one call
            idx = np.array([i for i, b in enumerate(kernel) if (b.mode, float(b.value)) == key])
            choice[idx] = self.scorer.select(p[idx], cost[idx], self.available, select.Budget(*key))
        if (choice < 0).any():
            raise NoExpert("no expert of the pool is available to route to")
        return [Routing(self.names[c], dict(zip(self.names, map(float, p[i]))), float(cost[i, c]),
                        dict(zip(self.names, map(float, cost[i]))), specs[i].model_id, str(subj[i]))
                for i, c in enumerate(choice)]

    def pick(self, routing: Routing, budget: str | BudgetSpec, failed: Sequence[str]) -> str | None:
        """The expert to ask after `failed` did not answer: the routed one first, then the one the
        same budget picks with the failed ones removed (None: none left within it)."""
        if not failed:
            return routing.expert
        avail = self.available & np.array([n not in failed for n in self.names])
        if not avail.any():
            return None
        spec = budgets.parse(budget)
        cost = np.array([[routing.costs[n] for n in self.names]])
        if spec.kind == "cap" and not (cost[0][avail] <= spec.value).any():
            return None  # the cheapest left already breaks the cap
        p = np.array([[routing.p[n] for n in self.names]], np.float32)
        return self.names[int(self.scorer.select(p, cost, avail, self.budget(spec))[0])]

    # --- answering -----------------------------------------------------------------------------

    async def aget_response(self, query, budget: str | BudgetSpec, max_tokens: int = 256,
                            routing: Routing | None = None) -> Response:
        """Route `query` (unless `routing` is given), ask the chosen expert; when it fails, the
        next best under the same budget; NoExpert when none is left."""
        if not self.backends:
            raise NoExpert("no expert has a backend: pass backends= (live Flax experts or endpoints) to answer")
        routing = routing or self.route([query], budget)[0]
        messages = as_messages(query_text(query) if isinstance(query, mmlu.Question) else query)
        expert, done, failed = await in_turn(lambda failed: self.pick(routing, budget, failed),
                                             lambda expert: self.backends[expert].complete(messages, max_tokens))
        spent = self.pool.experts[self.names.index(expert)].usd(done.prompt_tokens, done.completion_tokens)
        return Response(done.text, expert, routing, done, spent, tuple(failed))

    def get_response(self, query, budget: str | BudgetSpec, max_tokens: int = 256) -> Response:
        """`aget_response` from synchronous code (not from inside a running event loop)."""
        return asyncio.run(self.aget_response(query, budget, max_tokens))

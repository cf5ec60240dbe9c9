"""`Orchestrator.from_run(...).route(...)`: free-form queries scored as the evaluated model
scores its questions, choices that are the kernel's exact answer, budgets from VAL."""

import math

import numpy as np
import pytest

from configs.pools import MMLU_9
from leeroo_jax import Orchestrator
from leeroo_jax.data.pool import Pool, query_text
from leeroo_jax.orchestrator import features
from leeroo_jax.serving import scoring
from leeroo_jax.serving.budgets import BadBudget

GPT4, LLAMA3 = "gpt-4-1106-preview", "meta-llama/Meta-Llama-3-8B"


@pytest.fixture(scope="module")
def orch(tiny_run):
    return Orchestrator.from_run(tiny_run)


@pytest.fixture(scope="module")
def test_questions(orch):
    d = orch.run.data
    rows = d.rows("test")[:40]
    return rows, [d.questions[r] for r in rows]


def test_the_server_path_scores_questions_as_the_trained_model_does(orch, test_questions):
    """MMLU TEST questions through the serving path (tokenize, embed, kNN features, head, in
    fixed buckets) give the p the training code's batch prediction gives (data.vecs, its features)."""
    rows, questions = test_questions
    p, subjects = orch.scorer.p([query_text(q) for q in questions], [q.subject for q in questions])
    np.testing.assert_allclose(p, orch.run.predict(rows), atol=2e-5)
    assert list(subjects) == [q.subject for q in questions]


def test_a_free_form_query_takes_the_subject_of_its_nearest_train_questions(orch, test_questions):
    _, questions = test_questions
    _, voted = orch.scorer.p([query_text(q) for q in questions])  # no subject given
    hits = np.mean([v == q.subject for v, q in zip(voted, questions)])
    assert hits >= 0.5, hits  # 57 subjects: chance is ~2%


def test_the_device_search_is_an_exact_top_k_over_train(orch, test_questions):
    """The server's search (on device, behind the backbone) against float64 NumPy: the k
    similarities it returns are the k largest, nearest first, and belong to the rows it names."""
    rows, _ = test_questions
    d, sc = orch.run.data, orch.scorer
    idx, sims = (np.asarray(a) for a in scoring._search(d.vecs[rows], sc._train_unit, sc._k))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    brute = unit(d.vecs[rows].astype(np.float64)) @ unit(d.vecs[d.rows("train")].astype(np.float64)).T
    assert idx.shape == (len(rows), max(20, *orch.run.cfg.train.side_knn))
    np.testing.assert_allclose(sims, -np.sort(-brute, axis=1)[:, :sc._k], atol=1e-5)
    np.testing.assert_allclose(sims, np.take_along_axis(brute, idx, 1), atol=1e-5)


def test_nearest_subject_is_the_brute_force_vote():
    rng = np.random.default_rng(0)
    train, queries = rng.normal(size=(300, 16)), rng.normal(size=(25, 16))
    subjects = rng.choice(["a", "b", "c", "d"], 300)
    got = features.nearest_subject(queries, train, subjects, k=15)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(queries) @ unit(train).T
    for i in range(25):
        top = np.argsort(-sims[i])[:15]
        votes = {s: sims[i, top][subjects[top] == s].sum() for s in set(subjects[top])}
        assert got[i] == max(sorted(votes), key=votes.get)


def test_costs_are_list_prices_times_tokens_of_the_query():
    texts = ["Which planet has the most moons?", "x" * 401]
    pool = Pool.from_config(MMLU_9)
    want = np.array([[(math.ceil(len(t) / 4) * e["input_price"] + 1 * e["output_price"]) / 1e6 for e in MMLU_9]
                     for t in texts])
    np.testing.assert_allclose(pool.text_costs(texts), want, rtol=1e-12)


def _brute_cap(p, cost, cap, avail):
    """Best p among the available experts within the cap; ties to the cheaper, then lower index."""
    out = []
    for pi, ci in zip(p, cost):
        ok = [e for e in range(len(pi)) if avail[e] and ci[e] <= cap]
        out.append(min(ok, key=lambda e: (-pi[e], ci[e], e)))
    return np.array(out)


@pytest.mark.parametrize("cap", [2e-6, 2e-5, 1e-3])
def test_a_cap_picks_the_best_expert_it_affords(orch, cap):
    texts = ["Which planet has the most moons?", "What is the derivative of x^3?", "Who wrote Hamlet?",
             "Name the capital of Australia.", "What does DNA polymerase do?"]
    routed = orch.route(texts, budget=f"leeroo-cap-{cap}")
    p = np.array([[r.p[n] for n in orch.names] for r in routed])
    cost = orch.pool.text_costs(texts)
    want = _brute_cap(p, cost, cap, np.ones(len(orch.names), bool))
    assert [r.expert for r in routed] == [orch.names[e] for e in want]
    assert all(r.cost_usd <= cap and r.budget == f"leeroo-cap-{cap:g}" for r in routed)


def test_backends_limit_the_choice_to_the_experts_that_can_answer(orch):
    only = Orchestrator(orch.run, {LLAMA3: object(), "mistralai/Mistral-7B-v0.1": object()})
    for r in only.route(["Which planet has the most moons?", "What is 2+2?"] * 3, budget="leeroo-lambda-0"):
        assert r.expert in (LLAMA3, "mistralai/Mistral-7B-v0.1")
        assert r.p[GPT4] > 0  # every expert is still scored


@pytest.mark.parametrize("per_1k", [0.05, 0.3, 1.0])
def test_cost1k_is_a_lambda_fitted_on_val_to_spend_the_target(orch, per_1k):
    """On VAL, argmax p - lambda*cost (NumPy, float64) spends at most the target per query, and
    near it. lambda is the smallest that fits, so a query sits exactly on a tie there: NumPy is
    asked at lambda * (1 + 1e-5), past the float32 rounding of the kernel's scores."""
    budget = orch.budget(f"leeroo-cost1k-{per_1k}")
    d = orch.run.data
    val = d.rows("val")
    p, cost = orch.run.predict(val).astype(np.float64), d.cost[val].astype(np.float32).astype(np.float64)

    def spent(lam):
        score = p - lam * cost
        choice = np.where(score == score.max(1, keepdims=True), cost, np.inf).argmin(1)  # ties to the cheaper
        return cost[np.arange(len(val)), choice].mean()

    assert budget.mode == "tradeoff"
    assert spent(float(budget.value) * (1 + 1e-5)) <= per_1k / 1000
    assert spent(float(budget.value) * (1 - 1e-5)) >= 0.8 * per_1k / 1000  # and near it: not a needlessly large lambda


def test_per_query_budgets_in_one_batch_are_each_query_alone(orch):
    texts = ["Which planet has the most moons?", "What is the derivative of x^3?", "Who wrote Hamlet?"]
    specs = ["leeroo-cap-2e-6", "leeroo-lambda-0", "leeroo-cost1k-0.3"]
    together = orch.route(texts, budget=specs)
    alone = [orch.route([t], budget=s)[0] for t, s in zip(texts, specs)]
    assert [r.expert for r in together] == [r.expert for r in alone]
    for a, b in zip(together, alone):
        np.testing.assert_allclose([a.p[n] for n in orch.names], [b.p[n] for n in orch.names], atol=1e-6)


def test_budgets_no_routing_can_meet_are_one_line_errors(orch):
    text = "Which planet has the most moons?"
    cheapest = min(MMLU_9, key=lambda e: e["input_price"])  # every 7B expert costs the same: the first of them
    with pytest.raises(BadBudget, match=f"below the cheapest available expert for this query \\({cheapest['name']}"):
        orch.route([text], budget="leeroo-cap-1e-9")
    with pytest.raises(BadBudget, match="below the cheapest routing"):
        orch.route([text], budget="leeroo-cost1k-0.000001")
    assert orch.route([text], budget="leeroo-cost1k-1000")[0].expert == orch.route([text], "leeroo-lambda-0")[0].expert


def test_after_warmup_no_request_pays_a_compile(orch, caplog):
    """Every batch bucket, every budget kind (a new cost1k value too), 1 to 70 queries: nothing
    is compiled once `warmup` ran (jax logs each compilation with jax_log_compiles)."""
    import jax

    orch.warmup()
    texts = ["Which planet has the most moons?", "What is the derivative of x^3 with respect to x?"] * 35
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for n in (1, 3, 9, 17, 70):
            for budget in ("leeroo-cap-1e-4", "leeroo-lambda-0.5", "leeroo-quality-0.7", f"leeroo-cost1k-{0.2 + n / 100}"):
                orch.route(texts[:n], budget=budget)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled[:3]


def test_get_response_asks_the_chosen_expert_and_falls_back_when_it_fails(orch, smollm2_path):
    """Llama-3-8B behind a port nothing listens on, Mistral-7B played by the live SmolLM2 (in
    this process, batched): the cap picks Llama, it fails, Mistral answers under the same cap."""
    import socket

    from leeroo_jax.data.pool import Expert
    from leeroo_jax.experts.chat import LiveChat
    from leeroo_jax.experts.remote import RemoteExpert
    from leeroo_jax.serving.backends import LiveBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    chat = LiveChat.load(Expert("smollm2", 0, 0, backend="flax", checkpoint="smollm2", recipe="chat"),
                         batch_sizes=(1,), lengths=(64,), max_new_tokens=12)
    live = Orchestrator(orch.run, {LLAMA3: RemoteExpert(LLAMA3, f"http://127.0.0.1:{dead}/v1", timeout_s=5),
                                   "mistralai/Mistral-7B-v0.1": LiveBackend(chat)})
    for _ in range(2):  # each call runs its own event loop: the batcher and clients follow it
        r = live.get_response("What is the capital of France?", budget="leeroo-cap-1e-5", max_tokens=12)
        assert r.routing.expert == LLAMA3 and r.failed == (LLAMA3,) and r.expert == "mistralai/Mistral-7B-v0.1"
        assert "Paris" in r.text and 0 < r.completion.completion_tokens <= 12
        price = next(e for e in MMLU_9 if e["name"] == r.expert)
        want = (r.completion.prompt_tokens * price["input_price"] + r.completion.completion_tokens * price["output_price"]) / 1e6
        assert r.cost_usd == pytest.approx(want, rel=1e-12)


def test_in_turn_asks_each_pick_until_one_answers_and_names_the_failed():
    import asyncio

    from leeroo_jax.experts.chat import BackendError
    from leeroo_jax.serving.api import NoExpert, in_turn

    order, down = ["a", "b", "c"], {"a", "b"}
    pick = lambda failed: next((e for e in order if e not in failed), None)  # noqa: E731
    failures = []

    async def ask(expert):
        if expert in down:
            raise BackendError(f"{expert} is down")
        return expert.upper()

    assert asyncio.run(in_turn(pick, ask, failures.append)) == ("c", "C", ["a", "b"])
    assert failures == ["a", "b"]
    down.add("c")
    with pytest.raises(NoExpert) as e:
        asyncio.run(in_turn(pick, ask))
    assert e.value.failed == ("a", "b", "c") and "failed: a, b, c" in str(e.value)

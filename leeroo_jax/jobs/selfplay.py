"""Self-play: the orchestrator chooses which experts to call, the answers are graded and
recorded, and it retrains on what it gathered, round after round.

    python -m leeroo_jax.selfplay --config=configs/mmlu.py:selfplay

Two stores under the run directory:
  oracle/   every recorded outcome (the graded-outcomes CSV, imported once). A recorded expert's
            outcome is read from here only when the loop calls that expert on that question.
  records/  what the loop knows: seeded (round 0) with every VAL and TEST outcome (evaluation
            only; never trained on) and all outcomes of `start_fraction` of TRAIN questions;
            each round appends the calls it made (round r, grader "gold").
Round r = 1..R, on the bank (TRAIN questions, their outcomes withheld):
  (b) the round r-1 orchestrator draws `samples` MC-dropout p's for every bank question, and
      `explore.choose_calls` picks (question, expert) calls within `calls_per_round` and
      `usd_per_round`, by `strategy` (thompson | uncertainty | uniform)
  (c, d) a recorded expert reveals its oracle outcome; a live expert answers (experts/live.py);
      both are graded against the gold letter
  (e) the calls are appended to records/ in one commit
  (f) the head retrains on all records, warm-started from round r-1's best (frozen mode)
  (g) VAL and TEST hull AIQ, deployed accuracy at the weak expert's cost, calls and dollars
      -> rounds.json, metrics.jsonl + TensorBoard (tb/), learning_curve.png
Round 0 trains on the seed alone. Killed at any moment, the same command resumes: a round
whose calls are in records/ is not called again; its training resumes from its checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.data import dataset as dataset_lib
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.data.pool import by_subject
from leeroo_jax.data.records import RecordStore
from leeroo_jax.eval import curves
from leeroo_jax.eval import deployed as dep
from leeroo_jax.eval import evaluate
from leeroo_jax.eval import frontier as fr
from leeroo_jax.data.mmlu import Question, make_question
from leeroo_jax.experts import generator, judge
from leeroo_jax.experts.live import LiveExpert
from leeroo_jax.jobs import common
from leeroo_jax.orchestrator.backbone import Embedder
from leeroo_jax.orchestrator import explore
from leeroo_jax.training import loop, trainer as trainer_lib
from leeroo_jax.training.metrics_writer import MetricWriter

SEED_SOURCE, ROUND_SOURCE = "selfplay_seed", "selfplay"


def _view(full: Dataset, store: RecordStore, upto: int) -> Dataset:
    """`full` as the loop knows it after round `upto`: outcomes of records/ rows of rounds <= upto."""
    d = store.dense([q.id for q in full.questions], full.names, upto_round=upto)
    return dataclasses.replace(full, outcome=d.outcome, soft=d.soft, observed=d.observed)


def _seed(cfg, full: Dataset, path: pathlib.Path) -> None:
    """records/ at round 0: VAL and TEST outcomes, and `start_fraction` of TRAIN questions whole."""
    if (path / "manifest.json").exists():
        return
    tr = full.rows("train")
    rng = np.random.default_rng([cfg.selfplay.seed, 0])
    start = rng.choice(tr, int(round(cfg.selfplay.start_fraction * len(tr))), replace=False)
    rows = np.concatenate([full.rows("val"), full.rows("test"), np.sort(start)])
    q, e = np.nonzero(full.observed[rows])
    q = rows[q]
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    store = RecordStore(tmp, full.names)
    store.append([full.questions[i].id for i in q], [full.names[j] for j in e], full.outcome[q, e], full.cost[q, e],
                 round=0, source=SEED_SOURCE, soft=full.soft[q, e], grader="gold")
    os.replace(tmp, path)  # the seed appears whole or not at all


def _synced(store: RecordStore | None, path: pathlib.Path, name: str) -> RecordStore:
    """records/ as process 0 has committed it, in every process: the others wait at a barrier
    for its write, then reopen the store (a store reads its manifest and column shapes at open).
    Every process therefore trains round r on the same records."""
    distributed.barrier(name)
    return store if store is not None and distributed.is_main_process() else RecordStore(path)


def _round_cfg(cfg, out: pathlib.Path, r: int):
    c = copy.deepcopy(cfg)
    c.train.steps = cfg.selfplay.steps
    c.train.eval_every = cfg.selfplay.steps
    c.train.log_every = cfg.selfplay.steps
    c.train.init_head_from = str(out / f"round_{r - 1:02d}") if r > 0 and cfg.selfplay.warm_start else ""
    return c


def _train(cfg, view: Dataset, out: pathlib.Path, r: int) -> trainer_lib.Trainer:
    """Round r's orchestrator (resumes from its own checkpoints when they exist)."""
    c = _round_cfg(cfg, out, r)
    trainer = trainer_lib.Trainer(c, view, trainer_lib.side_features(c, view), trainer_lib.make_mesh(c))
    return loop.fit(c, trainer, out / f"round_{r:02d}", evaluate.val_hook(view, c.eval.weak, trainer.predict))


def _metrics(cfg, full: Dataset, trainer) -> dict:
    """VAL / TEST hull AIQ and deployed accuracy at the weak expert's mean cost."""
    out = {}
    for split in ("val", "test"):
        ev = full.eval_set(split)
        names = [full.names[e] for e in ev.experts]
        cost, outcome = full.cost[np.ix_(ev.rows, ev.experts)], full.outcome[np.ix_(ev.rows, ev.experts)]
        p = trainer.predict(ev.rows)[:, ev.experts]
        summ = fr.summarize(fr.sweep(p, cost, outcome), names, cost, outcome)
        weak = float(cost[:, names.index(cfg.eval.weak)].mean())
        out[f"{split}_aiq"] = summ.aiq
        out[f"{split}_deployed_acc_at_weak_cost"] = dep.deployed(p, cost, outcome, weak)["acc"]
    return out


class _Caller:
    """Makes the calls: oracle outcomes for recorded experts, live runs for live ones."""

    def __init__(self, cfg, full: Dataset):
        self.cfg, self.full, self.oracle, self._live = cfg, full, full, {}

    def callable(self, rows: np.ndarray, view: Dataset) -> np.ndarray:
        live = np.array([e.live for e in self.full.pool.experts])
        return ~view.observed[rows] & (self.oracle.observed[rows] | live[None, :])

    def call(self, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(outcome against the question's answer, soft, cost, live choice or -1) per (row, expert) pair."""
        outcome = np.array([self.oracle.outcome[q, e] for q, e in pairs], np.float64)
        soft = np.array([self.oracle.soft[q, e] for q, e in pairs], np.float64)
        cost = np.array([self.full.cost[q, e] for q, e in pairs], np.float64)
        choice = np.full(len(pairs), -1, np.int64)
        for e in {e for _, e in pairs if self.full.pool.experts[e].live}:
            idx = [i for i, (_, ee) in enumerate(pairs) if ee == e]
            qs = [self.full.questions[pairs[i][0]] for i in idx]
            for ans in self.expert(e).answer(qs):
                for j, k in enumerate(ans.index):
                    i = idx[k]
                    choice[i] = ans.choice[j]
                    outcome[i] = float(ans.choice[j] == qs[k].answer)
                    soft[i] = ans.probs[j, qs[k].answer]
                    ex = self.full.pool.experts[e]
                    cost[i] = (ans.in_tokens[j] * ex.input_price + ans.out_tokens[j] * ex.output_price) / 1e6
        return outcome, soft, cost, choice

    def reset(self, full: Dataset) -> None:
        """The question set grew (generated questions): the same experts, the new dataset."""
        self.full = self.oracle = full
        for live in self._live.values():
            live.bank = by_subject(full.questions)

    def expert(self, e: int) -> LiveExpert:
        if e not in self._live:
            self._live[e] = LiveExpert.load(self.full.pool.experts[e], trainer_lib.make_mesh(self.cfg),
                                            by_subject(self.full.questions), batch=self.cfg.experts.batch_size,
                                            max_tokens=self.cfg.experts.max_tokens,
                                            max_new_tokens=self.cfg.experts.max_new_tokens)
        return self._live[e]


def _read_generated(path: pathlib.Path) -> list[tuple[int, Question]]:
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        row = json.loads(line)
        out.append((row["round"], make_question(row["subject"], row["question"], row["choices"], row["answer"],
                                                f"{path.name}:{n}")))
    return out


def _generate_round(cfg, caller: "_Caller", generated, r: int, out: pathlib.Path) -> dict:
    """Round r's new questions (written to generated.jsonl before any call); reject counts."""
    sp = cfg.selfplay
    full = caller.full
    subjects = list(sp.generate_subjects) or sorted(set(full.subjects))
    live = caller.expert(full.names.index(sp.generator))
    made, rejects = generator.generate(live, by_subject(full.questions), subjects, sp.generate_per_subject,
                                       {q.id for q in full.questions}, np.random.default_rng([sp.seed, r, 1]),
                                       max_new_tokens=sp.generate_tokens)
    generated += [(r, q) for q in made]
    stats = {"requested": len(subjects) * sp.generate_per_subject, "parsed": len(made), "rejects": dict(rejects)}
    if distributed.is_main_process():  # the stats first: generated.jsonl holding round r means both are written
        path = out / "generation.json"
        fileio.write_json(path, {**(json.loads(path.read_text()) if path.exists() else {}), str(r): stats}, indent=1)
        fileio.write_text(out / "generated.jsonl", "".join(json.dumps(
            {"round": gr, "id": q.id, "subject": q.subject, "question": q.question, "choices": list(q.choices),
             "answer": q.answer}) + "\n" for gr, q in generated))
    return stats


def _judge(cfg, view: Dataset, real: np.ndarray, pairs, choice) -> np.ndarray:
    """The judged answer per pair's question (-1: not judged): the called live experts' letters
    weighted by their gold-graded accuracy on the real TRAIN questions so far (a prior below
    10 such grades), plus the generator's claimed answer when judge_generator_vote."""
    sp, full = cfg.selfplay, view

    def accuracy(e: int) -> float:
        seen = view.observed[real, e]
        return float(view.outcome[real, e][seen].mean()) if seen.sum() >= 10 else sp.judge_prior_accuracy

    votes: dict[int, list] = {}
    for (q, e), c in zip(pairs, choice):
        votes.setdefault(q, []).append((int(c), accuracy(e)))
    gen = full.names.index(sp.generator)
    answer = {}
    for q, v in votes.items():
        if sp.judge_generator_vote:
            v = v + [(full.questions[q].answer, accuracy(gen))]
        answer[q] = judge.weighted_majority(v, len(full.questions[q].choices))
    return np.array([answer[q] for q, _ in pairs])


STORES_WHY = "self-play keeps its record stores (oracle/, records/) in it"


def run(cfg) -> list[dict]:
    sp = cfg.selfplay
    common.require_local_run_dir(cfg, STORES_WHY)
    out = common.output_dir(cfg)
    generated = _read_generated(out / "generated.jsonl")

    def load() -> Dataset:
        return dataset_lib.load(cfg, out / "oracle", Embedder.from_config(cfg.backbone),
                                extra_questions=[q for _, q in generated])

    oracle = load()
    store_dir = out / "records"
    if distributed.is_main_process():
        _seed(cfg, oracle, store_dir)
    common.write_config(cfg, out)
    store = _synced(None, store_dir, "selfplay_seed")
    caller = _Caller(cfg, oracle)
    n_real = len(oracle.questions) - len(generated)  # generated questions come after the source's
    bank = oracle.rows("train")
    bank = bank[bank < n_real]  # the real TRAIN questions
    pairs_total = int(oracle.observed[bank].sum())  # the bank's recorded outcomes: 100% of what can be revealed
    per_round = int(round(sp.calls_per_round * pairs_total)) if sp.calls_per_round < 1 else int(sp.calls_per_round)
    done_path = out / "rounds.json"
    rounds = json.loads(done_path.read_text()) if done_path.exists() else []
    prev = _train(cfg, _view(oracle, store, len(rounds) - 1), out, len(rounds) - 1) if rounds else None

    with MetricWriter(out) as writer:
        for r in range(len(rounds), sp.rounds + 1):
            extra = {}
            if r > 0 and not (store.read(["round"])["round"] == r).any():
                rows, grader = bank, "gold"
                if sp.source == "generator":
                    if not any(gr == r for gr, _ in generated):
                        _generate_round(cfg, caller, generated, r, out)
                        oracle = load()
                        caller.reset(oracle)
                        prev = _train(cfg, _view(oracle, store, r - 1), out, r - 1)  # restored: p for the new rows too
                    ids = {q.id for gr, q in generated if gr == r}
                    rows = np.array([i for i, q in enumerate(oracle.questions) if q.id in ids], np.int64)
                    grader = f"judge:{sp.judge}"
                view = _view(oracle, store, r - 1)
                samples = prev.predict_samples(rows, sp.samples, seed=sp.seed * 1000 + r)
                rng = np.random.default_rng([sp.seed, r])
                made = explore.choose_calls(sp.strategy, samples, oracle.cost[rows], caller.callable(rows, view),
                                            per_round, sp.usd_per_round, rng)
                pairs = [(int(rows[q]), e) for q, e in made]
                outcome, soft, cost, choice = caller.call(pairs)
                if sp.source == "generator":  # no gold answer: grade against the judge's
                    answer = _judge(cfg, view, bank, pairs, choice)
                    keep = answer >= 0
                    extra["unjudged_calls"] = int((~keep).sum())
                    pairs = [p for p, k in zip(pairs, keep) if k]
                    outcome, soft, cost = (choice[keep] == answer[keep]).astype(np.float64), soft[keep], cost[keep]
                if distributed.is_main_process() and pairs:  # one commit: the round's calls are all in or none
                    store.append([oracle.questions[q].id for q, _ in pairs], [oracle.names[e] for _, e in pairs], outcome,
                                 cost, round=r, source=ROUND_SOURCE, soft=soft, grader=grader)
                store = _synced(store, store_dir, "selfplay_round")
            if sp.source == "generator" and r > 0:  # also after a resume: the stats were saved with the questions
                extra["generation"] = json.loads((out / "generation.json").read_text())[str(r)]
            view = _view(oracle, store, r)
            prev = _train(cfg, view, out, r)
            rows_ = store.read(["round", "cost"])
            mine = rows_["round"] == r
            known = int(view.observed[bank].sum())
            rec = {"round": r, "calls": int(mine.sum()) if r else 0, "usd": float(rows_["cost"][mine].sum()) if r else 0.0,
                   "train_pairs_known": known, "train_pairs_share": known / pairs_total, **extra,
                   **_metrics(cfg, oracle, prev)}
            rounds.append(rec)
            writer.write(r, {k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "round"})
            if distributed.is_main_process():
                fileio.write_json(done_path, rounds, indent=1)
                curves.learning_curve(rounds, out / "learning_curve.png", sp.strategy)
            print(f"round {r}: {rec['calls']} calls, ${rec['usd']:.4f}, TRAIN pairs known {rec['train_pairs_share']:.1%}, "
                  f"VAL AIQ {rec['val_aiq']:.4f}, TEST AIQ {rec['test_aiq']:.4f}, "
                  f"TEST deployed acc @weak {rec['test_deployed_acc_at_weak_cost']:.4f}"
                  + (f", generated {extra['generation']}" if "generation" in extra else ""))
    return rounds

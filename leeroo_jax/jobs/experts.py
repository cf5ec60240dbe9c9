"""Score the pool's live experts on questions, into the run's record store.

    python -m leeroo_jax.score --config=configs/mmlu.py:live --config.job=experts \
        [--config.experts.questions=test|FILE|cais/mmlu] [--config.experts.limit=N]

Every live expert (`backend="flax"`) answers every selected question it has no record for
yet. Each batch's answers are appended to the store as one atomic commit (records.py): the
grade against the gold letter, the letter distribution, input/output tokens, the cost at the
expert's list price and the batch's wall time shared over its rows. Killed at any moment,
the same command resumes: what was committed is skipped, the batch in flight is redone.

Question selection: `experts.questions` "" = the dataset's questions (config.data.source),
train / val / test = that split of them, else a question source (data/mmlu.py). The set is
ordered by question id (a subject-balanced order) and cut to `experts.limit` (0 = all), so
a rerun with the same limit selects the same questions.
"""

from __future__ import annotations


import numpy as np
from tqdm import tqdm

from leeroo_jax import distributed, fileio
from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.dataset import open_records
from leeroo_jax.data.pool import Pool, by_subject, parse_recipe
from leeroo_jax.errors import ConfigError
from leeroo_jax.experts.live import LiveExpert, check_decoder
from leeroo_jax.jobs import common
from leeroo_jax.training.trainer import make_mesh

SOURCE = "experts_job"


def select_questions(cfg, questions: list[mmlu.Question]) -> list[mmlu.Question]:
    src = cfg.experts.questions
    if src in ("", "all"):
        chosen = questions
    elif src in {s.value for s in splits.Split}:
        chosen = [q for q in questions if splits.split_of(q.id).value == src]
    else:
        chosen = mmlu.load_questions(src)
    chosen = sorted(chosen, key=lambda q: q.id)
    return chosen[: cfg.experts.limit] if cfg.experts.limit > 0 else chosen


def run(cfg) -> dict:
    pool = Pool.from_config(cfg.pool)
    live = [e for e in pool.experts if e.live]
    if not live:
        raise ConfigError("config.pool has no live expert (backend='flax'); add one, e.g. --config=configs/mmlu.py:live")
    for e in live:  # a missing or non-decoder checkpoint fails before anything is written
        check_decoder(e)
    out = common.output_dir(cfg)
    questions = mmlu.load_questions(cfg.data.source)
    targets = select_questions(cfg, questions)
    bank = by_subject(questions)
    _check_exemplars(live, targets, bank)
    store = open_records(cfg, common.records_dir(cfg), questions, pool)
    mesh = make_mesh(cfg)
    main = distributed.is_main_process()

    summary = {}
    for e in live:
        done = store.done(e.name)
        todo = [q for q in targets if q.id not in done]
        stats = _empty_stats()
        if todo:
            expert = LiveExpert.load(e, mesh, bank, batch=cfg.experts.batch_size, max_tokens=cfg.experts.max_tokens,
                                     max_new_tokens=cfg.experts.max_new_tokens)
            bar = tqdm(total=len(todo), desc=e.name, unit="q", disable=not main, dynamic_ncols=True)
            stats = answer_into(store, expert, todo, write=main, bar=bar)
            bar.close()
        summary[e.name] = _summarise(e, store, targets, stats)

    if main:
        fileio.write_json(out / "experts_summary.json", summary, indent=1)
        md = _markdown(summary, len(targets))
        fileio.write_text(out / "experts_summary.md", md)
        print(md)
        print(f"records: {common.records_dir(cfg)} ({len(store)} rows); wrote {out}/experts_summary.{{json,md}}")
    return summary


def _check_exemplars(live, targets, bank) -> None:
    """A k-shot expert needs k TRAIN exemplars of each question's subject (never the question
    itself); fail before anything is recorded rather than silently score with fewer."""
    for e in live:
        kind, shots = parse_recipe(e.recipe, e.name)
        short = sorted({q.subject for q in targets if kind == "letters" and shots
                        and sum(t.id != q.id for t in bank.get(q.subject, ())) < shots})
        if short:
            raise ConfigError(f"expert {e.name} ({e.recipe}) needs {shots} TRAIN exemplars per subject, but config.data.source "
                              f"has fewer for {', '.join(short[:5])}{' ...' if len(short) > 5 else ''}; use a zero-shot "
                              "recipe for these questions or a source with more TRAIN questions of those subjects")


def _empty_stats() -> dict:
    return dict(answered=0, correct=0, unparsed=0, in_tokens=0, out_tokens=0, cost=0.0, seconds=0.0)


def answer_into(store, expert: LiveExpert, todo: list[mmlu.Question], write: bool = True, bar=None) -> dict:
    """Answer `todo`, appending each batch to `store` as one commit (write: this process is
    the writer); returns this call's counts, tokens, dollars and seconds."""
    e, stats = expert.expert, _empty_stats()
    for ans in expert.answer(todo):
        qs = [todo[i] for i in ans.index]
        gold = np.array([q.answer for q in qs])
        outcome = (ans.choice == gold).astype(np.float32)
        cost = (ans.in_tokens * e.input_price + ans.out_tokens * e.output_price) / 1e6
        soft = ans.probs[np.arange(len(qs)), gold]  # P(gold letter); NaN for chat replies
        if write:  # the batch commits whole or not at all
            store.append([q.id for q in qs], [e.name] * len(qs), outcome, cost, round=0, source=SOURCE, soft=soft,
                         choice=ans.choice, letters=ans.probs, in_tokens=ans.in_tokens, out_tokens=ans.out_tokens,
                         wall_s=np.full(len(qs), ans.seconds / len(qs)), grader="gold")
        stats["answered"] += len(qs)
        stats["correct"] += int(outcome.sum())
        stats["unparsed"] += int((ans.choice < 0).sum())
        stats["in_tokens"] += int(ans.in_tokens.sum())
        stats["out_tokens"] += int(ans.out_tokens.sum())
        stats["cost"] += float(cost.sum())
        stats["seconds"] += ans.seconds
        if bar is not None:
            bar.update(len(qs))
            bar.set_postfix(acc=f"{stats['correct'] / stats['answered']:.3f}",
                            tok_s=f"{stats['in_tokens'] / max(stats['seconds'], 1e-9):.0f}")
    return stats


def _summarise(e, store, targets, stats) -> dict:
    """This run's throughput, and the accuracy over every record of the expert on the targets."""
    rows = store.read()
    want = {q.id for q in targets}
    mine = (rows["expert"] == store.experts.index(e.name)) & np.isin(rows["qid"], list(want))
    seconds = max(stats["seconds"], 1e-9)
    return {
        "recipe": e.recipe, "checkpoint": e.checkpoint, "questions": len(targets),
        "recorded": int(len(set(rows["qid"][mine]))), "accuracy": float(rows["outcome"][mine].mean()) if mine.any() else None,
        "answered_now": stats["answered"], "unparsed_now": stats["unparsed"],
        "in_tokens_now": stats["in_tokens"], "out_tokens_now": stats["out_tokens"],
        "tokens_per_s": stats["in_tokens"] / seconds if stats["answered"] else None,
        "seconds_now": round(stats["seconds"], 2), "usd_now": stats["cost"],
        "usd_total": float(rows["cost"][mine].sum()),
    }


def _markdown(summary: dict, n: int) -> str:
    lines = [f"# Live experts on {n} questions", "",
             "| expert | recipe | recorded | accuracy | answered now | unparsed | prompt tokens/s | $ (list price, all records) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        acc = "—" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        tps = "—" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.0f}"
        lines.append(f"| {name} | {s['recipe']} | {s['recorded']} | {acc} | {s['answered_now']} | {s['unparsed_now']} | "
                     f"{tps} | {s['usd_total']:.4f} |")
    return "\n".join(lines) + "\n"

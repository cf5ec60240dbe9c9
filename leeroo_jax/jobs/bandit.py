"""The bandit benchmark: does exploring by the orchestrator's uncertainty beat calling at random?

    python -m leeroo_jax.selfplay --config=configs/mmlu.py:selfplay --config.selfplay.benchmark=true

Runs self-play (jobs/selfplay.py) with config.selfplay.strategy and with uniform random calls,
each for `bench_seeds` seeds (seed s: the round-0 TRAIN questions, the calls' randomness and
the head's initialisation), with the same rounds and per-round call budget, so at every round
both have made the same number of calls. The full-information reference trains, per seed,
on every TRAIN outcome (start_fraction=1, no rounds). Writes <run>/bandit.{json,md,png}: TEST
AIQ per round (mean and range over seeds), the share of the full-information AIQ reached,
and the rounds where the strategy's mean is above uniform's. Sub-runs live in <run>/bench/
and resume like any self-play run.
"""

from __future__ import annotations

import copy

import numpy as np

from leeroo_jax import distributed, fileio
from leeroo_jax.eval import curves as plots
from leeroo_jax.jobs import common, selfplay


def _sub(cfg, name: str, seed: int, **selfplay_kw):
    c = copy.deepcopy(cfg)
    c.run_name = f"{cfg.run_name}/bench/{name}_s{seed}"
    c.selfplay.benchmark = False
    c.selfplay.seed = c.train.seed = seed
    for k, v in selfplay_kw.items():
        c.selfplay[k] = v
    return c


def run(cfg) -> dict:
    common.require_local_run_dir(cfg, selfplay.STORES_WHY)  # its sub-runs are self-play runs under it
    out = common.output_dir(cfg)
    ours, seeds = cfg.selfplay.strategy, range(cfg.selfplay.bench_seeds)
    curves = {s: [selfplay.run(_sub(cfg, s, seed, strategy=s)) for seed in seeds] for s in (ours, "uniform")}
    full = [selfplay.run(_sub(cfg, "full_information", seed, rounds=0, start_fraction=1.0))[0] for seed in seeds]
    full_aiq = float(np.mean([f["test_aiq"] for f in full]))
    res = {"strategy": ours, "seeds": len(seeds), "full_information_test_aiq": full_aiq,
           "full_information_test_aiq_per_seed": [f["test_aiq"] for f in full], "rounds": []}
    for r in range(cfg.selfplay.rounds + 1):
        row = {"round": r, "train_pairs_share": float(np.mean([c[r]["train_pairs_share"] for c in curves[ours]]))}
        for s, runs in curves.items():
            v = np.array([c[r]["test_aiq"] for c in runs])
            row[s] = {"test_aiq_mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
                      "val_aiq_mean": float(np.mean([c[r]["val_aiq"] for c in runs])),
                      "usd_mean": float(np.mean([c[r]["usd"] for c in runs])), "per_seed": v.tolist()}
        row["equal_calls"] = all(a[r]["calls"] == b[r]["calls"] for a, b in zip(curves[ours], curves["uniform"]))
        row["share_of_full"] = row[ours]["test_aiq_mean"] / full_aiq
        row["above_uniform"] = row[ours]["test_aiq_mean"] > row["uniform"]["test_aiq_mean"]
        res["rounds"].append(row)
    last = res["rounds"][-1]
    res["final"] = {"train_pairs_share": last["train_pairs_share"], "share_of_full": last["share_of_full"],
                    "above_uniform_rounds": [r["round"] for r in res["rounds"][1:] if r["above_uniform"]]}
    if distributed.is_main_process():
        fileio.write_json(out / "bandit.json", res, indent=1)
        md = markdown(res)
        fileio.write_text(out / "bandit.md", md)
        plots.bandit_curves(res, curves, out / "bandit.png")
        print(md)
    return res


def markdown(res: dict) -> str:
    s = res["strategy"]
    lines = [f"# Bandit benchmark: {s} vs uniform random calls ({res['seeds']} seeds, TEST hull AIQ)", "",
             f"Full information (every TRAIN outcome): {res['full_information_test_aiq']:.4f}", "",
             f"| round | TRAIN pairs known | {s} (min-max) | uniform (min-max) | {s} − uniform | {s} / full information |",
             "|---:|---:|---|---|---:|---:|"]
    unequal = [r["round"] for r in res["rounds"] if not r["equal_calls"]]
    if unequal:
        lines[1:1] = ["", f"**Not a like-for-like comparison in rounds {unequal}**: the dollar budget (usd_per_round) "
                          "bound before the call budget, so the strategies made different numbers of calls."]
    for r in res["rounds"]:
        a, u = r[s], r["uniform"]
        lines.append(f"| {r['round']} | {r['train_pairs_share']:.1%} | {a['test_aiq_mean']:.4f} ({a['min']:.4f}-{a['max']:.4f}) | "
                     f"{u['test_aiq_mean']:.4f} ({u['min']:.4f}-{u['max']:.4f}) | "
                     f"{a['test_aiq_mean'] - u['test_aiq_mean']:+.4f} | {r['share_of_full']:.1%} |")
    return "\n".join(lines) + "\n"

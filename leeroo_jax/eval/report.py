"""Evaluation reports: report.json, report.md (tables) and frontier.png.

report.md leads with what a user can get (a budget fixed before outcomes: deployed at a batch
budget, and lam calibrated on VAL, deployed.py), then the hindsight frontier summaries (AIQ
and friends over the convex hull swept with the split's outcomes). Costs are reported in USD
per 1,000 queries. Every file is written atomically (fileio), so an interrupted job never
leaves a half-written report.
"""

from __future__ import annotations

import io
import json
import pathlib
from typing import Mapping

import numpy as np

from leeroo_jax import fileio
from leeroo_jax.eval import frontier as fr

PER_1K = 1000.0


def _short(name: str) -> str:
    return name.split("/")[-1]


def build(split: str, names: list[str], cost: np.ndarray, outcome: np.ndarray,
          fronts: Mapping[str, fr.Frontier], weak: str, strong: str) -> dict:
    """The report dict; `fronts` maps router name -> its frontier on this split."""
    c, a = cost.mean(0), outcome.mean(0)
    w, s = names.index(weak), names.index(strong)
    pair = ((c[w], a[w]), (c[s], a[s]))
    routers = {}
    for rname, f in fronts.items():
        summ = fr.summarize(f, names, cost, outcome)
        cpt50, cpt80 = fr.cpt(f, *pair, 0.5), fr.cpt(f, *pair, 0.8)
        routers[rname] = {
            "aiq": summ.aiq,
            "max_acc": summ.max_acc,
            "acc_at_cost_of": summ.acc_at_cost_of,
            "cost_ratio_to_acc_of": summ.cost_ratio_to_acc_of,
            "apgr": fr.apgr(f, *pair),
            "cpt50": cpt50,
            "cpt80": cpt80,
            "hull": [[float(x) * PER_1K, float(y)] for x, y in f.hull],
        }
    return {
        "split": split,
        "n_questions": int(cost.shape[0]),
        "weak_strong": [weak, strong],
        "experts": {n: {"cost_per_1k": float(c[i] * PER_1K), "acc": float(a[i])} for i, n in enumerate(names)},
        "routers": routers,
    }


def _f(x, fmt="{:.4f}"):
    return "—" if x is None else fmt.format(x)


def headline(report: dict) -> list[str]:
    """One table per budget target: deployed and VAL-calibrated accuracy and cost per router."""
    routers = {n: r for n, r in report["routers"].items() if "deployed" in r}
    if not routers:
        return []
    n_val = report.get("n_calibration", {}).get("val", "?")
    lines = ["Budgets fixed before any outcome is seen (what a user can get): *deployed* = the kernel's batch budget "
             "(lam* from predicted p and known costs; mean cost <= budget); *VAL-calibrated* = lam fitted on "
             f"{n_val} VAL questions to the target, then applied one query at a time.", ""]
    for goal, dep in next(iter(routers.values()))["deployed"].items():
        lines += [f"Budget: the mean cost of {goal} on these questions, {dep['budget'] * PER_1K:.4f} USD / 1k queries.", "",
                  "| router | deployed: acc | USD / 1k | VAL-calibrated: acc | USD / 1k | cost error |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in routers.items():
            d, c = r["deployed"][goal], r["calibrated"][goal]
            sat = " (saturated)" if c["saturated"] else ""
            sat += " (target outside VAL's range: fitted at its end)" if c.get("clipped_to_val_range") else ""
            lines.append(f"| {name} | {d['acc']:.4f} | {d['cost'] * PER_1K:.4f} | {c['acc']:.4f} | "
                         f"{c['cost'] * PER_1K:.4f} | {c['cost_error_pct']:+.1f}%{sat} |")
        lines.append("")
    return lines


def deployment(report: dict) -> list[str]:
    """The VAL-decided policy on this split: per budget the deployed router against the best
    single expert affordable there, then its AIQ beside every candidate's (same budgets)."""
    dep = report.get("deployment")
    if not dep:
        return []
    ranges = "; ".join(f"{r['router']} from {r['from_usd'] * PER_1K:.4g}" + ("" if r["to_usd"] is None else
                                                                             f" to {r['to_usd'] * PER_1K:.4g}")
                       for r in dep["ranges"])
    lines = [f"Deployed policy, decided on VAL (USD / 1k queries): {ranges}.", "",
             "| budget: mean cost of | USD / 1k | deployed router | acc | best single expert within budget | its acc | margin |",
             "|---|---:|---|---:|---|---:|---:|"]
    for label, r in dep["at"].items():
        b = r["best_single"]
        lines.append(f"| {label} | {r['budget'] * PER_1K:.4f} | {r['deployed']} | {r['acc']:.4f} | "
                     + (f"{_short(b['expert'])} | {b['acc']:.4f} | {r['acc'] - b['acc']:+.4f} |" if b else "— | — | — |"))
    aiq = dep["aiq_deployed"]
    lines += ["", "AIQ of the deployed choice over 64 budgets (cheapest to dearest expert): "
              + ", ".join(f"{n} {v:.4f}" for n, v in aiq.items()) + "."]
    failed = [k for k, v in dep.get("checks", {}).items() if not v["ok"]]
    lines += ["All checks hold." if not failed else
              "Checks that fail: " + "; ".join(f"{k} ({dep['checks'][k]['margin']:+.4f})" for k in failed) + "."]
    cal = report.get("calibration")
    if cal:
        lines += ["", f"Calibration ({cal['kind']}, fitted on VAL): expected calibration error on {cal['split'].upper()} "
                  f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after (VAL {cal['val_ece_before']:.4f} → "
                  f"{cal['val_ece_after']:.4f}"
                  + ")." + ("" if "val_cross_fitted" not in cal else " Cross-fitted on VAL (5 folds, each calibrated by "
                                                            "maps fitted on the others): " + ", ".join(
                      f"{k} {v:.4f}" for k, v in cal["val_cross_fitted"].items()) + ".")]
    return lines + [""]


def markdown(report: dict, at: str, reach: str) -> str:
    """Expert costs and accuracies, the headline (deployed / calibrated) table, then the
    hindsight table: AIQ, max accuracy, accuracy at `at`'s cost, cost ratio to `reach`, APGR, CPT."""
    e = report["experts"]
    title = f"# {report['split'].upper()}: {report['n_questions']} questions (graded by every evaluated expert), {len(e)} experts"
    lines = [title, ""]
    if report.get("excluded_experts"):
        lines += [f"Not evaluated (no outcomes on this split): {', '.join(report['excluded_experts'])}.", ""]
    lines += ["| expert | USD / 1k queries | accuracy |", "|---|---:|---:|"]
    lines += [f"| {n} | {v['cost_per_1k']:.4f} | {v['acc']:.4f} |" for n, v in sorted(e.items(), key=lambda kv: kv[1]["cost_per_1k"])]
    lines += [""] + headline(report) + deployment(report)
    weak, strong = report["weak_strong"]
    lines += [
        "Hindsight frontier (lam swept with this split's outcomes, convex hull; not a point a user can pick in advance):",
        "",
        f"| router | AIQ | max acc | acc at {_short(at)} cost | cost / {_short(reach)} cost to match it "
        f"| APGR ({_short(weak)}→{_short(strong)}) | CPT(50%) | CPT(80%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["routers"].items():
        lines.append(
            f"| {name} | {r['aiq']:.4f} | {r['max_acc']:.4f} | {r['acc_at_cost_of'][at]:.4f} | "
            f"{_f(r['cost_ratio_to_acc_of'][reach], '{:.3f}×')} | {r['apgr']:.3f} | {_f(r['cpt50'], '{:.1%}')} | {_f(r['cpt80'], '{:.1%}')} |"
        )
    return "\n".join(lines + strong_share(report)) + "\n"


def strong_share(report: dict) -> list[str]:
    """RouteLLM's two-model metrics: thresholds on p_strong - p_weak, cost counted in calls."""
    rows = {n: r["strong_share"] for n, r in report["routers"].items() if "strong_share" in r}
    if not rows:
        return []
    weak, strong = (_short(n) for n in report["weak_strong"])
    lines = ["", f"Two-model routing in RouteLLM's units ({weak} or {strong} per query, by a threshold on "
             f"p({strong}) - p({weak}); no mixing; CPT as the share of {strong} calls):", "",
             "| router | APGR | CPT(50%) | CPT(80%) |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {r['apgr']:.3f} | {_f(r['cpt50'], '{:.1%}')} | {_f(r['cpt80'], '{:.1%}')} |" for n, r in rows.items()]
    return lines


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, r in report["routers"].items():
        h = np.asarray(r["hull"])
        style = dict(linestyle="--", color="black") if name == "oracle" else {}
        ax.plot(h[:, 0], h[:, 1], label=f"{name} (AIQ {r['aiq']:.3f})", lw=1.6, **style)
    for n, v in report["experts"].items():
        ax.scatter(v["cost_per_1k"], v["acc"], s=18, color="gray", zorder=3)
        ax.annotate(_short(n), (v["cost_per_1k"], v["acc"]), fontsize=6, xytext=(3, -3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("cost, USD per 1,000 queries (log)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"MMLU {report['split']} ({report['n_questions']} questions): accuracy vs cost")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    fileio.write_bytes(path, png.getvalue())


def write(report: dict, out_dir: pathlib.Path, at: str, reach: str) -> str:
    """Write report.json, report.md and frontier.png; returns the markdown."""
    md = markdown(report, at, reach)
    js = json.dumps(report, indent=1, default=float)  # numpy scalars -> float; fails before any write
    fileio.writable_dir(out_dir)
    plot(report, out_dir / "frontier.png")
    fileio.write_text(out_dir / "report.md", md)
    fileio.write_text(out_dir / "report.json", js)
    return md

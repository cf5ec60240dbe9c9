"""Self-play's plots: one run's learning curve, and the bandit benchmark's strategies side by side.

x is the share of TRAIN's recorded (question, expert) outcomes the loop knows; y is hull AIQ.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np

from leeroo_jax import fileio

X_LABEL = "TRAIN (question, expert) outcomes known, %"


def _axes(size=(6.5, 4.2)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def _save(fig, ax, path: pathlib.Path, ylabel: str) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    fileio.write_bytes(path, png.getvalue())


def learning_curve(rounds: list[dict], path: pathlib.Path, label: str) -> None:
    """VAL and TEST AIQ after each round of one self-play run."""
    fig, ax = _axes()
    x = [100 * r["train_pairs_share"] for r in rounds]
    for key, style in (("val_aiq", "--"), ("test_aiq", "-")):
        ax.plot(x, [r[key] for r in rounds], style, marker="o", label=f"{label}: {key.replace('_', ' ')}")
    _save(fig, ax, path, "hull AIQ")


def bandit_curves(res: dict, curves: dict, path: pathlib.Path) -> None:
    """Each strategy's TEST AIQ per round, mean over seeds with the min-max band, and the
    full-information line."""
    fig, ax = _axes((7, 4.5))
    x = [100 * r["train_pairs_share"] for r in res["rounds"]]
    for s, runs in curves.items():
        v = np.array([[c["test_aiq"] for c in run] for run in runs])  # [seeds, rounds]
        ax.plot(x, v.mean(0), marker="o", label=f"{s} (mean of {len(runs)} seeds)")
        ax.fill_between(x, v.min(0), v.max(0), alpha=0.2)
    ax.axhline(res["full_information_test_aiq"], color="black", ls="--", lw=1, label="full information")
    _save(fig, ax, path, "TEST hull AIQ")

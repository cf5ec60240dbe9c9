"""Out-of-fold predictions on TRAIN: evidence for decisions that VAL alone is too small for.

The 9-expert pool has 565 VAL questions graded by every expert, so a deployed accuracy
measured there has a standard error near 2 points: as large as the differences the deployment
policy and the tuner decide on. Cross-fitting makes TRAIN count without letting any router
see the questions it is judged on. TRAIN is cut into k folds by question id; for each fold, a
frozen-mode orchestrator is trained on the other k - 1 folds (side features and reference
routers fitted on them alone) and predicts the held-out fold. Together the held-out
predictions cover every TRAIN question, out of sample.

A fold is a view of the dataset (`fold_view`): its questions play VAL, VAL's play no part
("holdout"), TEST stays TEST. So the trainer, the side features and the reference routers run
unchanged: each reads only the view's TRAIN rows.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from leeroo_jax.data.dataset import Dataset
from leeroo_jax.eval import evaluate
from leeroo_jax.training import step
from leeroo_jax.training.trainer import Trainer, make_mesh, side_features


def fold_of(ds: Dataset, k: int) -> np.ndarray:
    """[Q] fold index in 0..k-1, from the id alone (the id's last digit mod 10 is the split,
    so the fold uses the digits above it)."""
    return np.array([(int(q.id, 16) // 10) % k for q in ds.questions])


def fold_view(ds: Dataset, held_out: np.ndarray) -> Dataset:
    """ds with the TRAIN questions in `held_out` [Q] bool as VAL and VAL's as holdout."""
    split = ds.split.astype("U7")  # a copy wide enough for "holdout"
    split[split == "val"] = "holdout"
    split[held_out & (ds.split == "train")] = "val"
    return dataclasses.replace(ds, split=split)


def fit_in_memory(trainer: Trainer, steps: int) -> Trainer:
    """`steps` optimizer steps with no checkpoint and no evaluation (the caller fixes the step
    count, e.g. the main run's best step, so the held-out fold selects nothing)."""
    for s in range(steps):
        trainer.state, _ = step.train_step(trainer.graphdef, trainer.state, trainer.batch(s),
                                           step.step_key(trainer.key, s))
    return trainer


def folds(ds: Dataset, k: int) -> tuple[np.ndarray, np.ndarray, list[tuple[Dataset, np.ndarray]]]:
    """(rows, experts, [(view, held rows)] per fold): rows are the TRAIN questions graded by
    every expert with TRAIN outcomes (`experts`), in fold order; each view holds one fold out."""
    train = ds.rows("train")
    experts = np.flatnonzero(ds.observed[train].any(0))
    full = train[ds.observed[np.ix_(train, experts)].all(1)]
    fold = fold_of(ds, k)
    views = [(fold_view(ds, fold == f), full[fold[full] == f]) for f in range(k)]
    return np.concatenate([held for _, held in views]), experts, views


def out_of_fold(cfg, ds: Dataset, k: int, steps: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(rows, {router: p [len(rows), E]}): every TRAIN question graded by every expert that has
    TRAIN outcomes (in fold order), each predicted by routers fitted without its fold; the
    orchestrator is trained `steps` steps (frozen mode: the cached embeddings in ds.vecs)."""
    rows, _, views = folds(ds, k)
    mesh = make_mesh(cfg)
    out: dict[str, list[np.ndarray]] = {}
    for view, held in views:
        if not len(held):
            continue
        trainer = fit_in_memory(Trainer(cfg, view, side_features(cfg, view), mesh), steps)
        preds = {"orchestrator": trainer.predict(held), **evaluate.reference_routers(cfg, view, held)}
        for name, q in preds.items():
            out.setdefault(name, []).append(q)
    return rows, {name: np.concatenate(qs) for name, qs in out.items()}

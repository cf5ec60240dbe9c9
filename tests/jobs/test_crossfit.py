"""Out-of-fold predictions on the real data (tiny config): folds from the id alone, views
that hide the held-out fold, and no leakage of a fold's outcomes into its own predictions."""

import dataclasses

import numpy as np
import pytest

from configs import tiny
from leeroo_jax.jobs import common, crossfit


@pytest.fixture(scope="module")
def cfg():
    c = tiny.get_config()
    c.train.steps = 10
    return c


@pytest.fixture(scope="module")
def ds(cfg):
    return common.load_dataset(cfg)


def test_folds_and_views(ds):
    folds = crossfit.fold_of(ds, 5)
    for split in ("train", "val", "test"):  # the fold digit is independent of the split digit
        counts = np.bincount(folds[ds.split == split], minlength=5)
        assert counts.min() > 0.8 * counts.mean()
    view = crossfit.fold_view(ds, folds == 2)
    assert set(view.rows("val")) == set(np.flatnonzero((folds == 2) & (ds.split == "train")))
    assert set(view.rows("train")) == set(np.flatnonzero((folds != 2) & (ds.split == "train")))
    assert set(view.rows("holdout")) == set(ds.rows("val")) and set(view.rows("test")) == set(ds.rows("test"))


def test_reference_routers_out_of_fold_are_fitted_without_the_fold(cfg, ds):
    rows, p = crossfit.out_of_fold(cfg, ds, 3, steps=cfg.train.steps)
    folds = crossfit.fold_of(ds, 3)
    train = ds.rows("train")
    assert set(rows) <= set(train) and len(rows) > 1000
    for f in range(3):
        others = train[folds[train] != f]
        obs = ds.observed[others]
        want = (ds.outcome[others] * obs).sum(0) / obs.sum(0)  # each expert's accuracy on the other folds
        mine = folds[rows] == f
        np.testing.assert_allclose(p["constant"][mine], np.tile(want, (mine.sum(), 1)), rtol=1e-5)
    assert set(p) == {"orchestrator", "constant", "subject_prior"}


def test_a_folds_own_outcomes_never_reach_its_predictions(cfg, ds):
    """Flip every outcome of fold 0: fold 0's out-of-fold p stay bit-identical, fold 1's move."""
    rows, p = crossfit.out_of_fold(cfg, ds, 2, steps=cfg.train.steps)
    folds = crossfit.fold_of(ds, 2)
    flipped = np.where((folds == 0)[:, None], 1 - ds.outcome, ds.outcome)
    rows2, q = crossfit.out_of_fold(cfg, dataclasses.replace(ds, outcome=flipped), 2, steps=cfg.train.steps)
    assert np.array_equal(rows, rows2)
    zero = folds[rows] == 0
    for name in p:
        np.testing.assert_array_equal(p[name][zero], q[name][zero], err_msg=name)
        assert not np.allclose(p[name][~zero], q[name][~zero]), name

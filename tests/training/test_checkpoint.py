"""Checkpoint retention: the last K plus the best by VAL AIQ, and exact round trips."""

import numpy as np

from leeroo_jax.training.checkpoint import Checkpointer


def test_keeps_last_k_and_the_best(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    for step, aiq in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.4)]:
        ckpt.save(step, {"w": np.full(3, step, np.float32)}, {"step": step}, metrics={"val_aiq": aiq})
    ckpt.wait()
    assert ckpt.mgr.all_steps() == [2, 4, 5]
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
    state, meta = ckpt.restore(2, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(np.asarray(state["w"]), [2, 2, 2])
    assert meta == {"step": 2}
    ckpt.close()

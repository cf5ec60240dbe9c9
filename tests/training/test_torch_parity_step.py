"""Our train step (loop.Trainer's model and optimizer, step.train_step) against the same head,
loss and AdamW schedule written in torch (bench/train_step.py's TorchTrainer, the benchmark's
baseline): from the same initial weights on the same batches, dropout off, the per-step
losses and the parameter updates agree. The torch side is the reference."""

import pytest

torch = pytest.importorskip("torch")

from bench import train_step as bench_ts  # noqa: E402
from configs import mmlu  # noqa: E402


def test_train_steps_match_torch():
    cfg = mmlu.get_config()  # the default head and optimizer: hidden 64, AdamW wd 0.1, warmup 20, clip 1
    data, vecs, side = bench_ts.synthetic_data(cfg, n=1024)
    par = bench_ts.parity(cfg, data, vecs, side, steps=4)  # lr is 0 at step 0; steps 1-3 move the weights
    assert par["same_batches"]
    assert par["max_update"] > 1e-5
    assert par["loss_rel"] < 1e-5, par["losses"]
    assert par["update_rel"] < 1e-3
    assert par["param_rel"] < 1e-5


def test_lr_factor_is_optax_schedule():
    """The torch LambdaLR factor is optim.schedule / lr at every step (warmup, cosine, flat tail)."""
    from leeroo_jax.training import optim

    cfg = optim.OptimConfig(lr=1e-3, warmup_steps=20, total_steps=300)
    sched = optim.schedule(cfg)
    for s in (0, 1, 19, 20, 21, 150, 299, 300, 400):
        assert bench_ts.lr_factor(s, 20, 300) * cfg.lr == pytest.approx(float(sched(s)), rel=1e-5, abs=1e-12)

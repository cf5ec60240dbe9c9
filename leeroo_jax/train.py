"""The main job: train the orchestrator and report it against the reference routers.

    python -m leeroo_jax.train --config=configs/mmlu.py [--config.train.steps=600 ...]

Writes checkpoints/<run_name>/: ckpt/ (Orbax), metrics.jsonl, report.{json,md},
frontier.png and routes.jsonl. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from leeroo_jax import compile_cache, config as config_lib, distributed
from leeroo_jax.errors import run_main

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py", "training config", lock_config=True)


def _run() -> None:
    cfg = _CONFIG.value
    config_lib.check_train(cfg)
    distributed.initialize()
    compile_cache.enable()
    from leeroo_jax.training import loop

    loop.run(cfg)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go through --config.<key>=<value>")
    run_main(_run)


if __name__ == "__main__":
    app.run(main)

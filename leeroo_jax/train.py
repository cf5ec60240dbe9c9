"""The main job: train the orchestrator and report it against the reference routers.

    python -m leeroo_jax.train --config=configs/mmlu.py [--config.train.steps=600 ...]

Writes checkpoints/<run_name>/: ckpt/ (Orbax), metrics.jsonl, report.{json,md},
frontier.png and routes.jsonl. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

from ml_collections import config_flags

from leeroo_jax import config as config_lib
from leeroo_jax.jobs import train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py", "training config", lock_config=True)


def _job(cfg) -> None:
    train.run(cfg)


if __name__ == "__main__":
    config_lib.absl_run(_CONFIG, config_lib.check_train, _job)

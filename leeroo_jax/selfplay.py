"""Self-play: explore -> call experts -> grade -> record -> retrain, round after round.

    python -m leeroo_jax.selfplay --config=configs/mmlu.py:selfplay [--config.selfplay.strategy=uniform ...]

Writes checkpoints/<run_name>/: oracle/ and records/ (record stores), round_XX/ (each round's
orchestrator), rounds.json, metrics.jsonl, tb/, learning_curve.png. Rerunning the same command
resumes at the last completed round (jobs/selfplay.py). --config.selfplay.benchmark=true runs
the bandit benchmark (jobs/bandit.py): the strategy against uniform random calls, 3 seeds.
"""

from __future__ import annotations

from ml_collections import config_flags

from leeroo_jax import config as config_lib
from leeroo_jax.jobs import bandit, selfplay

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py:selfplay", "self-play config", lock_config=True)


def _job(cfg) -> None:
    (bandit.run if cfg.selfplay.benchmark else selfplay.run)(cfg)


if __name__ == "__main__":
    config_lib.absl_run(_CONFIG, config_lib.check_selfplay, _job)

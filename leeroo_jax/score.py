"""Batch offline jobs.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=baselines

Jobs: `baselines` — the reference routers (zero, subject prior, kNN) and the oracle on the
configured split, written to <output_root>/<run_name>/report.{json,md} and frontier.png.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from leeroo_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py", "job config", lock_config=True)


def _job(cfg) -> None:
    if cfg.job == "baselines":
        from leeroo_jax.eval import baselines

        baselines.run(cfg)


if __name__ == "__main__":
    app.run(config_lib.absl_main(_CONFIG, config_lib.check, _job))

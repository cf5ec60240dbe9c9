"""Batch offline jobs.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=baselines

Jobs:
  baselines   the reference routers (zero, constant, subject prior, kNN) and the oracle on the
              configured split -> <output_root>/<run_name>/report.{json,md}, frontier.png
  route       route questions with a trained run (--config.checkpoint=checkpoints/<run>) under
              a budget (--config.route.*) -> <checkpoint>/route/choices.jsonl, summary.json
  experts     the pool's live experts (backend="flax") answer the questions they have no record
              for (--config.experts.*) -> the record store, experts_summary.{json,md}
  add_expert  fit a new expert's row from K graded probes (--config.add_expert.*), everything
              else frozen -> a new run directory with the larger pool
"""

from __future__ import annotations

from ml_collections import config_flags

from leeroo_jax import config as config_lib
from leeroo_jax.jobs import add_expert, baselines, experts, route

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py", "job config", lock_config=True)


def _job(cfg) -> None:
    {"baselines": baselines.run, "route": route.run_route, "add_expert": add_expert.run, "experts": experts.run}[cfg.job](cfg)


if __name__ == "__main__":
    config_lib.absl_run(_CONFIG, config_lib.check, _job)

"""Batch offline jobs.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=baselines

Jobs: `baselines` — the reference routers (zero, subject prior, kNN) and the oracle on the
configured split, written to <output_root>/<run_name>/report.{json,md} and frontier.png.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from leeroo_jax import compile_cache, config as config_lib, distributed
from leeroo_jax.errors import run_main

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mmlu.py", "job config", lock_config=True)


def _run() -> None:
    cfg = _CONFIG.value
    config_lib.check(cfg)
    distributed.initialize()
    compile_cache.enable()
    if cfg.job == "baselines":
        from leeroo_jax.eval import baselines

        baselines.run(cfg)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go through --config.<key>=<value>")
    run_main(_run)


if __name__ == "__main__":
    app.run(main)

"""Per-device memory and time plan of a config's train step and its experts' serving memory.

    python -m leeroo_jax.plan --config=configs/plan_v5e64.py [--config.mesh.fsdp=16 --config.mesh.data=1]

Reads config.json files only (no weights): every figure comes from abstract shapes
(`jax.eval_shape`) sharded by the logical rules on the config's mesh, and from the real
train step compiled for that mesh. Without the target chips, jax starts here with
config.plan.devices CPU devices to compile on. See planning/planner.py for each figure.
"""

from __future__ import annotations

import jax
from absl import flags
from ml_collections import config_flags

from leeroo_jax import config as config_lib
from leeroo_jax.planning import planner, report
from leeroo_jax.planning import spec as spec_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/plan_v5e64.py", "config to plan", lock_config=True)


def _check(cfg) -> None:
    config_lib.check_train(cfg)
    spec = spec_lib.from_config(cfg)
    if not spec.devices:  # config.mesh fills -1 from this machine's devices, as a run here would
        return
    try:  # before any backend starts: a laptop compiles a 64-chip program on 64 CPU devices
        jax.config.update("jax_num_cpu_devices", spec.devices)
    except RuntimeError:  # a backend is already up; planner.plan_devices says if it has too few
        pass


def _job(cfg) -> None:
    plan = planner.make_plan(cfg)
    print(report.render(plan, config_flags.get_config_filename(flags.FLAGS["config"])))


if __name__ == "__main__":
    config_lib.absl_run(_CONFIG, _check, _job)

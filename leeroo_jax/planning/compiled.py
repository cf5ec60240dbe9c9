"""The real train step (training/step.py), lowered and compiled for the mesh from abstract
inputs: every argument a ShapeDtypeStruct carrying its NamedSharding, so nothing is
allocated, and XLA's buffer assignment for one device is read back with memory_analysis().

Compiled where the devices exist: on the accelerator itself, or on N fake CPU devices
(the entry point starts jax with `jax_num_cpu_devices` = the plan's device count). A
program compiled for CPU devices is XLA:CPU's partition and buffer assignment of the same
program: fusion, layouts and scheduling differ from a TPU's or GPU's compiler, so it is
evidence for the analytic figures, not the target's own number.
"""

from __future__ import annotations

import dataclasses
import time

import jax
from jax.sharding import Mesh

from leeroo_jax.planning import shapes
from leeroo_jax.training import step


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    platform: str  # the devices compiled for ("cpu", "tpu", "gpu")
    argument_bytes: int  # per device: state + batch
    output_bytes: int
    alias_bytes: int  # outputs written into donated arguments
    temp_bytes: int  # everything else XLA allocates (gradients, activations, update temporaries)
    cost_flops: float | None  # cost_analysis()["flops"] of one device's program
    seconds: float  # lower + compile wall time

    @property
    def peak_bytes(self) -> int:
        """Bytes live on one device at once: arguments + outputs not aliased to them + temps."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def compile_step(ts: shapes.TrainShapes, mesh: Mesh) -> CompiledStep | None:
    """Compile `step.train_step` for `mesh`; None when the backend reports no memory stats."""
    t0 = time.perf_counter()
    state = shapes.sharded_state(ts.state, mesh)
    batch = shapes.sharded_batch(ts.batch, mesh)
    with jax.set_mesh(mesh):
        compiled = step.train_step.lower(ts.graphdef, state, batch, ts.key).compile()
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    flops = float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None
    platform = mesh.devices.flat[0].platform
    return CompiledStep(platform, int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes),
                        int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes), flops, time.perf_counter() - t0)

"""A per-device memory and time plan for a config: `make_plan(cfg) -> Plan`.

Train step, per device (the orchestrator as train.py builds it, on config.mesh):

  parameters, optimizer state, batch   shard shapes of the eval_shape'd state under the
                                       logical rules (exact: what device_put would place)
  gradients                            one per parameter, sharded like it (exact shapes)
  activations                          the residuals autodiff saves, traced at per-device
                                       shapes (activations.py), plus one layer's share of
                                       them again: the layer being differentiated holds its
                                       own temporaries while the others wait (an estimate)
  optimizer update                     one buffer the size of the learning parameters,
                                       live while AdamW's moments are updated (an estimate)
  peak estimate                        parameters + optimizer + batch + gradients
                                       + max(activations, optimizer update): activations
                                       are freed before the update runs

XLA:CPU's buffer assignment for the compiled step matches that structure within a few
percent on MiniLM, SmolLM2 and Llama-3-8B (tests/test_plan.py, notes in BUILD.md).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx
from jax.sharding import Mesh

from leeroo_jax import sharding
from leeroo_jax.errors import ConfigError
from leeroo_jax.planning import activations, compiled, flops, serving, shapes
from leeroo_jax.planning import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class TrainMemory:
    """Bytes on one device."""

    params: int
    opt_state: int
    batch: int
    grads: int
    saved: int  # residuals kept for the backward pass
    activations: int  # saved + the working layer's share
    update: int  # optimizer update transient

    @property
    def peak(self) -> int:
        return self.params + self.opt_state + self.batch + self.grads + max(self.activations, self.update)


@dataclasses.dataclass(frozen=True)
class Plan:
    spec: spec_lib.PlanSpec
    mesh_shape: dict[str, int]
    shapes: shapes.TrainShapes
    backbone_params: int  # parameter count of the backbone (0 in frozen mode: not in the step)
    head_params: int
    memory: TrainMemory
    flops: flops.StepFlops
    step_seconds: float
    compiled: compiled.CompiledStep | None
    compile_note: str  # why there is no compiled figure, or ""
    experts: list[serving.ExpertMemory]


def plan_mesh(cfg, devices) -> Mesh:
    """config.mesh on `devices`. Multi-slice sizes (dcn_*) fold into their axis: the
    shardings a plan needs depend on each axis's total size, not on which links it spans."""
    m = cfg.mesh
    folded = {k: (-1 if int(m[k]) == -1 else int(m[k]) * int(m.get(f"dcn_{k}", 1))) for k in ("data", "fsdp", "tensor")}
    return sharding.make_mesh(sharding.MeshConfig(**folded), devices=devices)


def plan_devices(n: int) -> list:
    """n devices to plan on: the default backend's when it has n, else n CPU devices (the entry
    point starts jax with that many; see compiled.py)."""
    for backend in (None, "cpu"):
        try:
            found = jax.devices(backend)
        except RuntimeError:
            continue
        if len(found) >= n:
            return list(found[:n])
    raise ConfigError(f"the plan's mesh needs {n} devices but this process has {len(jax.devices())}; run "
                      "`python -m leeroo_jax.plan`, which starts jax with that many CPU devices")


def _learning_param_bytes(params_state, mode: str) -> int:
    """Bytes of the parameters the optimizer moves: all of them, except the backbone's
    embeddings and final norm in last_k mode (optim.make gives those set_to_zero)."""
    if mode != "last_k":
        return shapes.device_bytes(params_state)
    total = 0
    for path, leaf in nnx.to_flat_state(params_state):
        keys = [str(p) for p in path]
        frozen = "backbone" in keys and "layers" not in keys[keys.index("backbone"):]
        total += 0 if frozen else shapes.device_bytes(leaf)
    return total


def make_plan(cfg, devices=None) -> Plan:
    """The plan of `cfg` on `devices` (default: config.plan.devices of them, see plan_devices)."""
    spec = spec_lib.from_config(cfg)
    if not spec.devices:  # a -1 in config.mesh and no plan.devices: the mesh a run here would make
        spec = dataclasses.replace(spec, devices=len(devices) if devices is not None else len(jax.devices()))
    ts = shapes.train_shapes(cfg, spec)
    mesh = plan_mesh(cfg, devices if devices is not None else plan_devices(spec.devices))
    if mesh.size != spec.devices:
        raise ConfigError(f"config.mesh spans {mesh.size} devices but config.plan.devices={spec.devices}; "
                          "make them agree (or use -1 in config.mesh to fill)")
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    if ts.batch_size % n_data:
        raise ConfigError(f"config.train.batch_size={ts.batch_size} does not split over the mesh's {n_data} "
                          "data-parallel devices (data x fsdp); use a multiple of it or change config.mesh")
    state = shapes.sharded_state(ts.state, mesh)
    params, opt_state = shapes.split_state(state)
    param_bytes = shapes.device_bytes(params)
    saved = activations.saved_bytes(cfg, ts, spec, n_data, mesh.shape["tensor"])
    working = saved // ts.trainable_layers if ts.trainable_layers else 0
    batch_bytes = shapes.device_bytes(shapes.sharded_batch(ts.batch, mesh))
    memory = TrainMemory(param_bytes, shapes.device_bytes(opt_state), batch_bytes, param_bytes, saved, saved + working,
                         _learning_param_bytes(params, ts.mode))
    step_flops = flops.step_flops(ts.model_cfg, ts.head_cfg, ts.mode, ts.trainable_layers, ts.batch_size, ts.seq_len)
    seconds = step_flops.seconds(spec.devices, spec.chip.peak_tflops * 1e12, spec.mfu)
    comp, note = None, "" if spec.compile else "config.plan.compile=False"
    if spec.compile:
        comp = compiled.compile_step(ts, mesh)
        note = "" if comp is not None else f"the {mesh.devices.flat[0].platform} backend reports no memory analysis"
    n_backbone = shapes.count(params["backbone"]) if ts.backbone_in_step else 0
    experts = serving.pool_experts(cfg, mesh, spec.kv_batch, spec.kv_len)
    return Plan(spec, dict(mesh.shape), ts, n_backbone, shapes.count(params) - n_backbone, memory, step_flops,
                seconds, comp, note, experts)

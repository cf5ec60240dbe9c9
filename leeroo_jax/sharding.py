"""Device mesh and logical-axis sharding rules.

Parameters and activations name their dimensions with *logical* axes ("embed", "mlp",
"heads", ...). One table, `LOGICAL_AXIS_RULES`, maps each logical axis to the mesh axes
("data", "fsdp", "tensor") it is split over. Models never mention mesh axes, so one
model definition runs unsharded on a laptop, FSDP on a TPU pod, or tensor-parallel on a
GPU node by changing the mesh config alone (the MaxText recipe).

A logical axis whose mesh axes do not divide the dimension is left unsplit on those axes
(e.g. SmolLM2's 3 KV heads on a tensor axis of 2): uneven shards would be rejected by jit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from leeroo_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes, tried in order. Parameters: "embed" is FSDP-sharded (weights
# gathered per layer), "mlp"/"heads"/"vocab" are tensor-parallel (Megatron split).
# Activations: "batch" spans both data-parallel axes; everything else is replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("layers", ()),
    ("norm", ()),
    ("length", ()),
    ("act_embed", ()),
    ("experts", ()),
)
_RULES = dict(LOGICAL_AXIS_RULES)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Per-axis sizes; -1 fills the devices left. `dcn_*` multiply across slices (multi-slice TPU)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_tensor: int = 1


def _fill(sizes: Sequence[int], total: int, what: str) -> list[int]:
    sizes = list(sizes)
    if sum(s == -1 for s in sizes) > 1:
        raise ConfigError(f"mesh: at most one {what} axis may be -1, got {sizes}; set the others explicitly")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh: {what} axis sizes must be positive or -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if total % known:
            raise ConfigError(f"mesh: {total} {what} devices do not divide by the fixed axes {sizes}; change the mesh sizes")
        sizes[sizes.index(-1)] = total // known
    if math.prod(sizes) != total:
        raise ConfigError(f"mesh: {what} axes {sizes} multiply to {math.prod(sizes)}, not the {total} devices; use -1 to fill")
    return sizes


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh with Auto axis types (rule-driven sharding)."""
    devices = list(devices if devices is not None else jax.devices())
    dcn = [cfg.dcn_data, cfg.dcn_fsdp, cfg.dcn_tensor]
    n_slices = math.prod(dcn)
    if n_slices == 1:
        ici = _fill([cfg.data, cfg.fsdp, cfg.tensor], len(devices), "device")
        return jax.make_mesh(ici, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
    if len(devices) % n_slices:
        raise ConfigError(f"mesh: {len(devices)} devices do not split into {n_slices} slices; check dcn_* sizes")
    from jax.experimental import mesh_utils  # multi-slice only: needs slice_index on devices

    ici = _fill([cfg.data, cfg.fsdp, cfg.tensor], len(devices) // n_slices, "per-slice device")
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> P:
    """PartitionSpec for an array of `shape` whose dims are named `names`.

    Each mesh axis is used at most once, and only where the product of the mesh axes kept
    for a dimension divides it.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        if name is None:
            spec.append(None)
            continue
        if name not in _RULES:
            raise ValueError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        kept, size = [], 1
        for axis in _RULES[name]:
            n = mesh.shape[axis]
            if axis in used or n == 1:
                continue
            if dim % (size * n):
                _dropped(name, dim, axis, size * n)
                continue
            kept.append(axis)
            size *= n
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


_DROPPED: set[tuple[str, int, str]] = set()


def _dropped(name: str, dim: int, axis: str, split: int) -> None:
    """Log, once per (logical axis, size, mesh axis), a rule dropped because the size does not
    divide: that dimension is then replicated over the mesh axis, which costs memory silently."""
    if (name, dim, axis) in _DROPPED:
        return
    _DROPPED.add((name, dim, axis))
    logging.warning("sharding: logical axis %r of size %d is not split over mesh axis %r (%d does not divide it); "
                    "it stays replicated there", name, dim, axis, split)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint by logical names under the current mesh; no-op without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


@functools.lru_cache(maxsize=64)
def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard dim 0 (the batch) over the data axes, replicate the rest (cached: a training
    loop asks for the same few every step)."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def local_rows(n: int, mesh: Mesh) -> np.ndarray:
    """Indices of the rows of an n-row global batch that this process feeds (its devices'
    shards of the batch dim, in order; every row in one process). n splits over the data axes.
    Build only these rows and pass them to `shard_batch`."""
    if jax.process_count() == 1:
        return np.arange(n)
    index = batch_sharding(mesh, 1).addressable_devices_indices_map((n,))
    spans = sorted({(s[0].start or 0, n if s[0].stop is None else s[0].stop) for s in index.values()})
    return np.concatenate([np.arange(a, b) for a, b in spans])


def shard_batch(batch: Any, mesh: Mesh, global_rows: int | None = None) -> Any:
    """Place a host pytree of numpy arrays as global arrays split along the batch dim.

    One device: the NumPy tree as is (the jitted step copies it in on its fast path, ~0.1 ms
    where a device_put per array costs ~0.5 ms a batch on 2 CPU cores). One process: one
    device_put of the whole tree. Multi-process: `batch` holds this process's rows only
    (`local_rows`) and the global array of `global_rows` rows (default: processes x local) is
    assembled without any host holding the whole batch.
    """
    if mesh.size == 1 and jax.process_count() == 1:
        return jax.tree.map(np.asarray, batch)
    shardings = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), batch)
    if jax.process_count() == 1:
        return jax.device_put(batch, shardings)

    def one(x, s):
        x = np.asarray(x)
        rows = global_rows if global_rows is not None else len(x) * jax.process_count()
        return jax.make_array_from_process_local_data(s, x, (rows, *x.shape[1:]))

    return jax.tree.map(one, batch, shardings)


def shard_global(batch: Any, mesh: Mesh) -> Any:
    """`shard_batch` for a global batch that every process holds whole (small host-side token
    arrays built by the same deterministic plan everywhere): each process feeds only its rows."""
    if jax.process_count() == 1:
        return shard_batch(batch, mesh)
    n = len(jax.tree.leaves(batch)[0])
    rows = local_rows(n, mesh)
    return shard_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch), mesh, n)


def replicated(x: Any, mesh: Mesh) -> Any:
    """A host array (the same in every process) as a global array replicated on every device
    of the mesh, placed once (a constant a jitted function reads on every call is not copied
    to the devices each time)."""
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(NamedSharding(mesh, P()), np.asarray(a)), x)


def gather(x: jax.Array) -> np.ndarray:
    """A global array as NumPy on every process (an all-gather across processes when it spans
    devices of other processes; `np.asarray` would fail there)."""
    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """NamedShardings for an nnx State, from each Variable's `logical_axes` metadata.

    Variables without logical axes (RNG counters, scalars) are replicated. Optimizer state
    inherits its parameter's metadata: moments (same shape) are sharded like the parameter,
    anything of another rank (step counts, placeholders of masked transforms) is replicated.
    """
    from flax import nnx

    def one(v):
        axes = v.get_metadata().get("logical_axes") if isinstance(v, nnx.Variable) else None
        shape = v.shape if hasattr(v, "shape") else ()
        return NamedSharding(mesh, logical_to_spec(axes, shape, mesh) if axes and len(axes) == len(shape) else P())

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def init_sharded(ctor: Any, mesh: Mesh) -> Any:
    """Build an nnx module with every parameter created directly on its sharding.

    `ctor()` builds the module; it is traced once abstractly to read the logical axes,
    then jitted with out_shardings so no full replica is ever materialised on one device.
    """
    from flax import nnx

    abstract = nnx.eval_shape(ctor)
    graphdef, abs_state = nnx.split(abstract)
    shardings = state_shardings(abs_state, mesh)

    def init():
        return nnx.split(ctor())[1]

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)

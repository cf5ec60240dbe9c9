"""What a plan is about: the target chip and the settings read from a config's `plan` section.

A config may carry a `plan` ConfigDict (configs/plan_v5e64.py does); any field it leaves out
takes the default below, so every training config can be planned as it is:

    chip         a preset of CHIPS (HBM per chip and peak dense bf16 FLOP/s, vendor figures)
    devices      chips in the target slice; 0 = the product of config.mesh when it has no -1,
                 else this machine's devices (what a training run here would fill the mesh with)
    mfu          model FLOP utilisation assumed for the step-time estimate
    hbm_gib, peak_tflops   override the preset (0 = the preset's)
    kv_batch     rows of an expert's KV cache (0 = config.experts.batch_size)
    kv_len       slots per row of that cache (prompt + generated tokens)
    compute_dtype, param_dtype   the orchestrator backbone's dtypes ("" = float32, what
                 train.py builds today: weights.loader.load with its default dtype)
    compile      also lower and compile the real train step for the mesh (memory_analysis)
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from leeroo_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_gib: float  # memory per chip
    peak_tflops: float  # dense bf16 matmul peak per chip, the vendor's figure


CHIPS = {
    "v5e": Chip("TPU v5e", 16.0, 197.0),  # cloud.google.com/tpu/docs/v5e
    "v5p": Chip("TPU v5p", 95.0, 459.0),
    "v4": Chip("TPU v4", 32.0, 275.0),
    "v6e": Chip("TPU v6e", 32.0, 918.0),
    "h100": Chip("NVIDIA H100 SXM", 80.0, 989.0),  # dense, without 2:4 sparsity
    "a100": Chip("NVIDIA A100 80GB", 80.0, 312.0),
}


@dataclasses.dataclass(frozen=True)
class PlanSpec:
    chip: Chip
    devices: int  # 0 until the planner resolves it to this machine's device count
    mfu: float
    kv_batch: int
    kv_len: int
    compute_dtype: jnp.dtype
    param_dtype: jnp.dtype
    compile: bool


_DEFAULTS = dict(chip="v5e", devices=0, mfu=0.4, hbm_gib=0.0, peak_tflops=0.0, kv_batch=0, kv_len=2048,
                 compute_dtype="", param_dtype="", compile=True)


def _dtype(name: str, field: str) -> jnp.dtype:
    if name in ("", "float32"):
        return jnp.dtype(jnp.float32)
    if name == "bfloat16":
        return jnp.dtype(jnp.bfloat16)
    raise ConfigError(f"config.plan.{field}={name!r}; choose float32 or bfloat16")


def mesh_devices(cfg) -> int:
    """Devices the config's mesh needs when it names every axis size (no -1); else 0."""
    sizes = [int(cfg.mesh[k]) for k in ("data", "fsdp", "tensor")]
    sizes += [int(cfg.mesh.get(f"dcn_{k}", 1)) for k in ("data", "fsdp", "tensor")]
    return 0 if -1 in sizes else math.prod(sizes)


def from_config(cfg) -> PlanSpec:
    """The config's `plan` section over the defaults; a bad value is a one-line ConfigError."""
    given = dict(cfg.get("plan", {}) or {})
    unknown = sorted(set(given) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"config.plan has unknown keys {', '.join(unknown)}; known: {', '.join(_DEFAULTS)}")
    p = {**_DEFAULTS, **given}
    if p["chip"] not in CHIPS:
        raise ConfigError(f"config.plan.chip={p['chip']!r}; choose one of {', '.join(CHIPS)}")
    preset = CHIPS[p["chip"]]
    chip = Chip(preset.name, float(p["hbm_gib"] or preset.hbm_gib), float(p["peak_tflops"] or preset.peak_tflops))
    devices = int(p["devices"]) or mesh_devices(cfg)  # 0: this machine's, resolved by the planner
    if devices < 0:
        raise ConfigError(f"config.plan.devices={devices} must be >= 0 (0 = the mesh's size or this machine's devices)")
    if not 0 < float(p["mfu"]) <= 1:
        raise ConfigError(f"config.plan.mfu={p['mfu']!r} must be in (0, 1]")
    kv_batch = int(p["kv_batch"]) or int(cfg.experts.batch_size)
    if kv_batch <= 0 or int(p["kv_len"]) <= 0:
        raise ConfigError("config.plan.kv_batch and kv_len must be positive")
    return PlanSpec(chip, devices, float(p["mfu"]), kv_batch, int(p["kv_len"]),
                    _dtype(p["compute_dtype"], "compute_dtype"), _dtype(p["param_dtype"], "param_dtype"),
                    bool(p["compile"]))

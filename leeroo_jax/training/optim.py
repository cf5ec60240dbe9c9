"""The optimizer: AdamW with linear warmup + cosine decay and global-norm clipping.

Layer-wise learning rates (a pretrained trunk wants small steps, a fresh head large ones):
parameters under the `backbone` attribute get `backbone_lr_scale` times the head's rate, and
the backbone's stacked layer weights [L, ...] are further scaled per layer, layer l (0 = the
bottom) by `layer_decay ** (L - 1 - l)`, the embeddings by `layer_decay ** L`. Fine-tuning only
the top k layers (`trainable_layers=k`) zeroes the scale of the others: with decoupled weight
decay a zero gradient is not enough to keep a weight still, so frozen weights must get a zero
*update*, and the embeddings get no optimizer state at all.
`accumulate` > 1 averages gradients over that many micro-batches (optax.MultiSteps).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    warmup_steps: int = 100
    total_steps: int = 2000
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    backbone_lr_scale: float = 0.05
    layer_decay: float = 1.0
    num_layers: int = 0  # L of the backbone's stacked layers (0: no layer-wise scaling)
    trainable_layers: int | None = None  # train only the top k backbone layers; None: all and the embeddings
    accumulate: int = 1


def schedule(cfg: OptimConfig) -> optax.Schedule:
    warmup = max(cfg.warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.total_steps, warmup + 1), cfg.lr * 0.01)


def layer_scales(cfg: OptimConfig) -> np.ndarray:
    """[L] multipliers of the backbone rate per stacked layer (0 for frozen layers)."""
    L = cfg.num_layers
    scales = cfg.layer_decay ** (L - 1 - np.arange(L, dtype=np.float64))
    if cfg.trainable_layers is not None:
        scales[: L - cfg.trainable_layers] = 0.0
    return scales.astype(np.float32)


def _scale_leading_axis(scales: np.ndarray) -> optax.GradientTransformation:
    """Multiplies each update [L, ...] by scales[L] along its leading (layer) axis."""
    def f(updates, params=None):
        del params
        return jax.tree.map(lambda u: u * jnp.asarray(scales, u.dtype).reshape((-1,) + (1,) * (u.ndim - 1)), updates)

    return optax.stateless(f)


def make(cfg: OptimConfig) -> optax.GradientTransformation:
    sched = schedule(cfg)

    def adamw(scale):
        return optax.adamw(lambda step: sched(step) * scale, weight_decay=cfg.weight_decay)

    bb = cfg.backbone_lr_scale
    embed = optax.set_to_zero() if cfg.trainable_layers is not None else adamw(bb * cfg.layer_decay ** cfg.num_layers)
    stacked = adamw(bb)
    if cfg.num_layers:
        stacked = optax.chain(stacked, _scale_leading_axis(layer_scales(cfg)))
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.multi_transform({"head": adamw(1.0), "backbone": embed, "backbone_layers": stacked}, _labels),
    )
    return optax.MultiSteps(tx, cfg.accumulate) if cfg.accumulate > 1 else tx


def _labels(params):
    """"backbone_layers" for the backbone's stacked layer weights (a `layers` attribute under
    `backbone`), "backbone" for its other weights (embeddings, final norms), "head" otherwise."""
    def label(path, _):
        keys = [getattr(k, "key", None) for k in path]
        if "backbone" not in keys:
            return "head"
        return "backbone_layers" if "layers" in keys[keys.index("backbone"):] else "backbone"

    return jax.tree_util.tree_map_with_path(label, params)

"""The optimizer: AdamW with linear warmup + cosine decay and global-norm clipping.

Parameters whose path contains "backbone" get `backbone_lr_scale` times the head's learning
rate (layer-wise rates: a pretrained trunk wants small steps, a fresh head large ones).
`accumulate` > 1 averages gradients over that many micro-batches (optax.MultiSteps).
"""

from __future__ import annotations

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    warmup_steps: int = 100
    total_steps: int = 2000
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    backbone_lr_scale: float = 0.05
    accumulate: int = 1


def schedule(cfg: OptimConfig) -> optax.Schedule:
    warmup = max(cfg.warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.total_steps, warmup + 1), cfg.lr * 0.01)


def make(cfg: OptimConfig) -> optax.GradientTransformation:
    def adamw(scale):
        sched = schedule(cfg)
        return optax.adamw(lambda step: sched(step) * scale, weight_decay=cfg.weight_decay)

    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.multi_transform({"head": adamw(1.0), "backbone": adamw(cfg.backbone_lr_scale)}, _labels),
    )
    return optax.MultiSteps(tx, cfg.accumulate) if cfg.accumulate > 1 else tx


def _labels(params):
    """"backbone" for parameters under a `backbone` attribute, "head" for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "backbone" if any(getattr(k, "key", None) == "backbone" for k in path) else "head", params
    )

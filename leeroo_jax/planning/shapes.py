"""The train step's state and batch as abstract arrays: shapes, dtypes and shardings, no memory.

`train_shapes(cfg, spec)` builds what `training.trainer.Trainer` builds: the orchestrator
(backbone from the config's config.json + head) and its `nnx.Optimizer`, but under
`nnx.eval_shape`, so an 8B model costs nothing; then the batch of one step. `sharded(...)`
attaches each array's NamedSharding on a mesh (the trainer's `sharding.state_shardings` and
`batch_sharding`), and `device_bytes` sums the bytes one device holds: the shard shape of
every array times its item size.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from leeroo_jax import sharding
from leeroo_jax.data.pool import Pool
from leeroo_jax.errors import ConfigError
from leeroo_jax.models import hf
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.models.encoder import Encoder
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.planning.spec import PlanSpec
from leeroo_jax.training import optim
from leeroo_jax.training.trainer import anchor_index, optim_config
from leeroo_jax.weights import assets, keymaps
from leeroo_jax.weights.loader import read_hf_config
from leeroo_jax.weights.safetensors_io import open_checkpoint


def config_dir(path: str, what: str) -> pathlib.Path:
    """The directory holding a model's config.json (weights are not needed to plan)."""
    directory = pathlib.Path(assets.backbone_path(path)).expanduser()
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{what}={path!r}: no config.json at {directory}; point it at a directory holding the "
                          "model's Hugging Face config.json (no weights needed), e.g. configs/hf/Meta-Llama-3-8B")
    return directory


def model_config(path: str, what: str) -> hf.DecoderConfig | hf.EncoderConfig:
    """Our model config from config.json alone. A BERT's pooler exists when its safetensors
    header lists one (what the loader checks), else HF's default (a BertModel has one)."""
    directory = config_dir(path, what)
    has_pooler = True
    files = sorted(directory.glob("*.safetensors"))
    if files:
        has_pooler = any(re.fullmatch(keymaps.POOLER_KEY, k) for k in open_checkpoint(directory))
    return hf.model_config(read_hf_config(directory), has_pooler=has_pooler)


@dataclasses.dataclass(frozen=True)
class TrainShapes:
    """One train step, abstract. state = nnx.split((model, optimizer))[1] as in the trainer."""

    model_cfg: hf.DecoderConfig | hf.EncoderConfig  # the backbone's (also in frozen mode: D of the head)
    mode: str  # frozen | last_k | full
    trainable_layers: int  # backbone layers that learn (0 in frozen mode)
    batch_size: int  # B, the global batch
    seq_len: int  # T, the longest bucket (config.backbone.max_length); 0 in frozen mode
    head_cfg: HeadConfig
    graphdef: Any
    state: Any  # nnx.State of ShapeDtypeStruct leaves: [0] the model, [1] the optimizer
    batch: dict[str, jax.ShapeDtypeStruct]
    key: jax.ShapeDtypeStruct

    @property
    def backbone_in_step(self) -> bool:
        return self.mode != "frozen"


def head_config(cfg, model_cfg) -> HeadConfig:
    t = cfg.train
    n_side = len(tuple(t.side_knn)) + int(bool(t.side_prior))  # features.side_features: one per k, then the prior
    return HeadConfig(model_cfg.hidden_size, len(Pool.from_config(cfg.pool).names), n_side, t.hidden, t.dropout,
                      anchor_index(cfg), members=int(t.get("ensemble", 1)))


def build_orchestrator(cfg, model_cfg, head_cfg: HeadConfig, spec: PlanSpec) -> Orchestrator:
    """The trainer's Orchestrator (call under nnx.eval_shape: no memory)."""
    head = Head(head_cfg, rngs=nnx.Rngs(0))
    if cfg.train.mode == "frozen":
        return Orchestrator(head)
    cls = Decoder if isinstance(model_cfg, hf.DecoderConfig) else Encoder
    backbone = cls(model_cfg, dtype=spec.compute_dtype, param_dtype=spec.param_dtype, rngs=nnx.Rngs(0))
    L = model_cfg.num_layers
    frozen = L - min(cfg.train.last_k, L) if cfg.train.mode == "last_k" else 0
    return Orchestrator(head, backbone, cfg.backbone.pooling, frozen_layers=frozen)


def batch_shapes(mode: str, b: int, t: int, head_cfg: HeadConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """The step's batch (Trainer.batch): tokens/attn [B, T] int32 (q [B, D] f32 in frozen
    mode), side [B, E, P], target and mask [B, E], all f32."""
    f32, e = jnp.float32, head_cfg.num_experts
    query = ({"q": jax.ShapeDtypeStruct((b, head_cfg.query_dim), f32)} if mode == "frozen" else
             {"tokens": jax.ShapeDtypeStruct((b, t), jnp.int32), "attn": jax.ShapeDtypeStruct((b, t), jnp.int32)})
    return {**query, "side": jax.ShapeDtypeStruct((b, e, head_cfg.num_side), f32),
            "target": jax.ShapeDtypeStruct((b, e), f32), "mask": jax.ShapeDtypeStruct((b, e), f32)}


def train_shapes(cfg, spec: PlanSpec) -> TrainShapes:
    model_cfg = model_config(cfg.backbone.path, "config.backbone.path")
    head_cfg = head_config(cfg, model_cfg)
    t = cfg.train
    tx = optim.make(optim_config(cfg, model_cfg.num_layers))

    def ctor():
        model = build_orchestrator(cfg, model_cfg, head_cfg, spec)
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, state = nnx.split(nnx.eval_shape(ctor))
    mode, L = t.mode, model_cfg.num_layers
    trainable = {"frozen": 0, "last_k": min(t.last_k, L), "full": L}[mode]
    seq = 0 if mode == "frozen" else int(cfg.backbone.max_length)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return TrainShapes(model_cfg, mode, trainable, int(t.batch_size), seq, head_cfg, graphdef, state,
                       batch_shapes(mode, int(t.batch_size), seq, head_cfg), key)


# --- shardings and per-device bytes ---------------------------------------------------------


def _has_shape(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def sharded_state(state: Any, mesh: Mesh) -> Any:
    """The abstract state with each array's NamedSharding from its logical axes (the
    trainer's placement). Leaves without a shape (optax's MaskedNode) stay as they are."""
    shardings = sharding.state_shardings(state, mesh)

    def one(s, var):
        value = var.get_value()
        if not _has_shape(value):
            return var
        return var.replace(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=s))

    return jax.tree.map(one, shardings, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def sharded_batch(batch: dict, mesh: Mesh) -> dict:
    """Every batch array split along its first (batch) dim over the data axes."""
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding.batch_sharding(mesh, len(v.shape)))
            for k, v in batch.items()}


def device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard:
    NamedShardings split evenly or not at all, so every device holds the same)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not _has_shape(leaf) or jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            continue
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


def split_state(state: Any) -> tuple[Any, Any]:
    """(the model's parameters, the optimizer's state) of a (model, optimizer) state."""
    return nnx.filter_state(state[0], nnx.Param), state[1]


def count(tree: Any) -> int:
    """Number of elements of every array leaf."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if _has_shape(x))

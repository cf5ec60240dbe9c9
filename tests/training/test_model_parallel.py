"""Model parallelism exercised, not just declared (issue 11, part 3): the real MiniLM (last_k
and full fine-tuning) and the real SmolLM2 as the orchestrator's backbone (last-token pooling)
train on a data=2, fsdp=2, tensor=2 mesh of 8 fake devices to the parameters of the same
steps on one device, and every parameter and Adam moment sits where the rules put it.

The specs below are derived by hand from LOGICAL_AXIS_RULES ("embed" -> fsdp, "vocab" /
"heads" / "kv_heads" / "mlp" -> tensor, the rest replicated; a size that does not divide its
mesh axis stays replicated there), so a rule that silently stops applying fails here."""

import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import jax
from configs import tiny
from leeroo_jax import sharding
from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.data.pool import Pool
from leeroo_jax.orchestrator.backbone import Backbone
from leeroo_jax.training import step
from leeroo_jax.training.trainer import Trainer
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load

STEPS = 2
HIDDEN = 16  # the head's width: divides the tensor axis

# all-MiniLM-L6-v2: V=30522, D=384, H=12, F=1536. The head's input is D + E*P = 384 + 9 = 393,
# odd, so its "embed" rule is dropped there.
MINILM = {
    "backbone.word_embed": P("tensor", "fsdp"),
    "backbone.pos_embed": P(None, "fsdp"),
    "backbone.type_embed": P(None, "fsdp"),
    "backbone.embed_ln_scale": P(), "backbone.embed_ln_bias": P(),
    "backbone.pooler_w": P("fsdp"), "backbone.pooler_b": P(),
    **{f"backbone.layers.w{x}": P(None, "fsdp", "tensor") for x in "qkv"},
    **{f"backbone.layers.b{x}": P(None, "tensor") for x in "qkv"},
    "backbone.layers.wo": P(None, "tensor", None, "fsdp"),
    "backbone.layers.bo": P(None, "fsdp"),
    "backbone.layers.w_in": P(None, "fsdp", "tensor"), "backbone.layers.b_in": P(None, "tensor"),
    "backbone.layers.w_out": P(None, "tensor", "fsdp"), "backbone.layers.b_out": P(None, "fsdp"),
    **{f"backbone.layers.{n}": P() for n in ("attn_ln_scale", "attn_ln_bias", "out_ln_scale", "out_ln_bias")},
}
# SmolLM2-135M: V=49152, D=576, 9 query heads and 3 KV heads (neither splits over tensor=2),
# F=1536, tied embeddings (no lm_head). Head input 576 + 9 = 585, odd.
SMOLLM2 = {
    "backbone.embed": P("tensor", "fsdp"),
    "backbone.final_norm": P(),
    "backbone.layers.attn_norm": P(), "backbone.layers.mlp_norm": P(),
    **{f"backbone.layers.w{x}": P(None, "fsdp") for x in "qkv"},
    "backbone.layers.wo": P(None, None, None, "fsdp"),
    "backbone.layers.w_gate": P(None, "fsdp", "tensor"), "backbone.layers.w_up": P(None, "fsdp", "tensor"),
    "backbone.layers.w_down": P(None, "tensor", "fsdp"),
}
HEAD = {"head.w1": P(None, "tensor"), "head.b1": P("tensor"), "head.w2": P("tensor"), "head.b2": P(),
        "head.experts": P(), "head.bias": P(), "head.side_w": P()}


def _dataset(dim: int) -> tuple[Dataset, np.ndarray]:
    """120 real questions (80 in TRAIN), random outcomes: the parity, not the accuracy, is tested."""
    cfg = tiny.get_config()
    qs = mmlu.load_questions(limit=120)
    pool = Pool.from_config(cfg.pool)
    rng = np.random.default_rng(0)
    q, e = len(qs), len(pool)
    ds = Dataset(qs, pool, pool.costs(qs), (rng.uniform(size=(q, e)) < 0.6).astype(np.float32),
                 np.full((q, e), np.nan), np.ones((q, e), bool), np.array([splits.split_of(x.id).value for x in qs]),
                 np.array([x.subject for x in qs]), rng.normal(size=(q, dim)).astype(np.float32))
    return ds, rng.uniform(0.1, 0.9, (q, e, 1)).astype(np.float32)


def _train(path, pooling: str, mode: str, mesh) -> Trainer:
    cfg = tiny.get_config()
    cfg.backbone.pooling, cfg.backbone.max_length = pooling, 24
    cfg.train.update(mode=mode, last_k=2, batch_size=8, lr=1e-3, backbone_lr_scale=1.0, warmup_steps=1, steps=STEPS, hidden=HIDDEN,
                     dropout=0.1)  # dropout on: the per-step keys must give the same masks on any mesh
    loaded = load(path, mesh)
    ds, side = _dataset(loaded.config.hidden_size)
    trainer = Trainer(cfg, ds, side, mesh, loaded, Backbone(loaded, pooling, 24).token_table(ds.texts, bucket_step=8))
    with jax.set_mesh(mesh):
        for s in range(STEPS):
            trainer.state, _ = step.train_step(trainer.graphdef, trainer.state, trainer.batch(s),
                                               step.step_key(trainer.key, s))
    return trainer


def _params(trainer: Trainer) -> dict[str, nnx.Variable]:
    model = nnx.merge(trainer.graphdef, trainer.state)[0]
    return {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("which,pooling,mode,golden", [
    ("minilm", "mean", "full", MINILM),
    ("minilm", "mean", "last_k", MINILM),
    ("smollm2", "last", "last_k", SMOLLM2),
], ids=["minilm-full", "minilm-last_k", "smollm2-last_k"])
def test_trains_on_2x2x2_to_the_one_device_parameters_on_the_rules_shardings(which, pooling, mode, golden, devices):
    path = (assets.minilm_dir() if which == "minilm" else assets.smollm2_dir())
    if not (path / "model.safetensors").exists():
        pytest.skip(f"{path} missing; run `make setup`")
    one = _params(_train(path, pooling, mode, sharding.make_mesh(sharding.MeshConfig(data=1), devices[:1])))
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2), devices)
    trained = _train(path, pooling, mode, mesh)
    ours = _params(trained)
    want = {**golden, **HEAD}
    assert set(ours) == set(want)
    for name, var in ours.items():
        x = var[...]
        assert x.sharding.is_equivalent_to(NamedSharding(mesh, want[name]), x.ndim), (name, x.sharding.spec)
        np.testing.assert_allclose(np.asarray(x), np.asarray(one[name][...]), rtol=0, atol=1e-5, err_msg=name)
    # the backbone learned (in last_k mode its top layer): parity of untouched weights proves nothing
    start = nnx.state(load(path, tokenizer=False).model, nnx.Param)
    top = np.asarray(start["layers"]["w_up" if which == "smollm2" else "w_in"][...][-1])
    assert np.abs(np.asarray(ours[f"backbone.layers.{'w_up' if which == 'smollm2' else 'w_in'}"][...])[-1] - top).max() > 1e-4
    # Adam's moments of every trainable weight sit on that weight's sharding (fsdp/tensor-split
    # optimizer state, not a replica per device)
    opt = [(k, v) for k, v in nnx.to_flat_state(trained.state) if k[0] == 1]  # (model, optimizer)[1]
    checked = 0
    for path_, v in opt:
        keys = [str(k) for k in path_]
        arr = v.get_value() if isinstance(v, nnx.Variable) else v
        moment = next((m for m in ("mu", "nu") if m in keys), None)
        name = ".".join(keys[keys.index(moment) + 1:]) if moment else ""
        if name in want and isinstance(arr, jax.Array) and arr.shape == ours[name][...].shape:  # not a placeholder of a frozen weight
            assert arr.sharding.is_equivalent_to(NamedSharding(mesh, want[name]), arr.ndim), (keys, arr.sharding.spec)
            checked += 1
    trainable = [n for n in want if n.startswith(("head.", "backbone.layers.")) or mode == "full"]
    assert checked == 2 * len(trainable), (checked, len(trainable))

"""Mesh construction, the logical-axis rules, and sharded == unsharded forwards on 8 fake devices."""

import numpy as np
import pytest
import torch
import transformers

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from leeroo_jax import sharding
from leeroo_jax.errors import ConfigError
from leeroo_jax.weights.loader import load

# Hand-derived from LOGICAL_AXIS_RULES for the tiny Llama below (V=128, D=64, H=4, K=2, F=96)
# on a data=2, fsdp=2, tensor=2 mesh: "embed" -> fsdp, "vocab"/"heads"/"kv_heads"/"mlp" -> tensor.
GOLDEN_SPECS = {
    "embed": P("tensor", "fsdp"),
    "final_norm": P(),
    "lm_head": P("fsdp", "tensor"),
    "layers.attn_norm": P(),
    "layers.mlp_norm": P(),
    "layers.wq": P(None, "fsdp", "tensor"),
    "layers.wk": P(None, "fsdp", "tensor"),
    "layers.wv": P(None, "fsdp", "tensor"),
    "layers.wo": P(None, "tensor", None, "fsdp"),
    "layers.w_gate": P(None, "fsdp", "tensor"),
    "layers.w_up": P(None, "fsdp", "tensor"),
    "layers.w_down": P(None, "tensor", "fsdp"),
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mesh222(devices):
    return sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2), devices)


def test_mesh_fills_minus_one(devices):
    mesh = sharding.make_mesh(sharding.MeshConfig(data=-1, fsdp=2, tensor=1), devices)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("cfg, msg", [
    (sharding.MeshConfig(data=-1, fsdp=-1), "at most one"),
    (sharding.MeshConfig(data=3, fsdp=-1), "do not divide"),
    (sharding.MeshConfig(data=2, fsdp=2, tensor=1), "multiply to 4"),
    (sharding.MeshConfig(data=0), "positive"),
])
def test_bad_mesh_is_one_line_error(devices, cfg, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        sharding.make_mesh(cfg, devices)
    assert "\n" not in str(e.value)


def test_rules_skip_axes_that_do_not_divide(mesh222):
    # SmolLM2 has 3 KV heads: a tensor axis of 2 cannot split them, so they stay replicated.
    assert sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), (576, 3, 64), mesh222) == P("fsdp")
    assert sharding.logical_to_spec(("batch", "length"), (8, 5), mesh222) == P(("data", "fsdp"))
    assert sharding.logical_to_spec(("batch", "length"), (6, 5), mesh222) == P("data")


def test_a_dropped_rule_is_logged_once(mesh222, caplog):
    """Not silently replicated: the first time a size does not divide its mesh axis, one warning."""
    import logging

    sharding._DROPPED.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), (576, 3, 64), mesh222)
    said = [r.getMessage() for r in caplog.records if "kv_heads" in r.getMessage()]
    assert said == ["sharding: logical axis 'kv_heads' of size 3 is not split over mesh axis 'tensor' (2 does not "
                    "divide it); it stays replicated there"]


def test_golden_partition_specs(tiny_llama, mesh222):
    ours = load(tiny_llama, mesh222)
    specs = {".".join(map(str, path)): s.spec
             for path, s in nnx.to_flat_state(sharding.state_shardings(nnx.state(ours.model), mesh222))}
    assert specs == GOLDEN_SPECS
    placed = {".".join(map(str, p)): v.get_value().sharding.spec for p, v in nnx.to_flat_state(nnx.state(ours.model))}
    assert placed == GOLDEN_SPECS  # the loader put every tensor where the rules say


def _forward(model, ids, mask):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m).logits)(state, ids, mask)


def test_sharded_forward_equals_single_device(tiny_llama, mesh222, devices):
    ids = np.random.RandomState(0).randint(0, 128, (8, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[3, :5] = 0
    single = load(tiny_llama)  # one device
    want = np.asarray(_forward(single.model, jnp.asarray(ids), jnp.asarray(mask)))
    sharded = load(tiny_llama, mesh222)
    with jax.set_mesh(mesh222):
        batch = sharding.shard_batch({"ids": ids, "mask": mask}, mesh222)
        assert batch["ids"].sharding.spec == P(("data", "fsdp"), None)
        got = _forward(sharded.model, batch["ids"], batch["mask"])
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_init_sharded_places_params_by_rules(mesh222):
    from leeroo_jax.models.decoder import Decoder
    from leeroo_jax.models.hf import DecoderConfig

    cfg = DecoderConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=16)
    model = sharding.init_sharded(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh222)
    assert model.layers.w_down[...].sharding.spec == GOLDEN_SPECS["layers.w_down"]
    assert model.embed[...].sharding.spec == GOLDEN_SPECS["embed"]


def test_train_state_sharded_like_params_and_step_matches_single_device(mesh222):
    """Adam moments of every backbone weight sit on that weight's golden sharding, and one
    last_k train step on the 2x2x2 mesh equals the same step on one device."""
    from leeroo_jax.models.decoder import Decoder
    from leeroo_jax.models.hf import DecoderConfig
    from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
    from leeroo_jax.training import optim, step

    cfg = DecoderConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=16)

    def build():
        model = Orchestrator(Head(HeadConfig(64, 3, 1, hidden=16, dropout=0.0), rngs=nnx.Rngs(1)),
                             Decoder(cfg, rngs=nnx.Rngs(0)), "last", frozen_layers=1)
        ocfg = optim.OptimConfig(lr=1e-2, warmup_steps=1, total_steps=5, num_layers=2, trainable_layers=1)
        return nnx.split((model, nnx.Optimizer(model, optim.make(ocfg), wrt=nnx.Param)))

    graphdef, state = build()
    shardings = sharding.state_shardings(state, mesh222)
    n_moments = 0
    for path, s in nnx.to_flat_state(shardings):
        names = [str(k) for k in path]
        # .../inner_states/backbone_layers/inner_state/0/{mu,nu}/backbone/layers/<w>: the moments of
        # the stacked layer weights (the other groups hold shape-() placeholders for them)
        if "backbone_layers" in names and ("mu" in names or "nu" in names):
            key = ".".join(names[names.index("mu" if "mu" in names else "nu") + 2:])
            if not key.startswith("layers."):
                continue  # a shape-() placeholder of a weight in another group
            assert s.spec == GOLDEN_SPECS[key], key
            n_moments += 1
    assert n_moments == 2 * 9  # mu and nu of the 9 stacked weights of the tiny Llama

    rng = np.random.default_rng(0)
    attn = np.ones((8, 12), np.int32)
    attn[::2, :5] = 0  # left padding
    batch = {"tokens": rng.integers(1, 128, (8, 12)).astype(np.int32) * attn, "attn": attn,
             "side": rng.uniform(0.1, 0.9, (8, 3, 1)).astype(np.float32),
             "target": (rng.uniform(size=(8, 3)) < 0.5).astype(np.float32), "mask": np.ones((8, 3), np.float32)}
    single, m1 = step.train_step(graphdef, state, batch, jax.random.key(0))
    _, state2 = build()
    with jax.set_mesh(mesh222):
        placed = jax.device_put(state2, shardings)
        sharded, m2 = step.train_step(graphdef, placed, sharding.shard_batch(batch, mesh222), jax.random.key(0))
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    a, b = nnx.to_pure_dict(single), nnx.to_pure_dict(sharded)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)
    wq = b[0]["backbone"]["layers"]["wq"]
    assert wq.sharding.spec == GOLDEN_SPECS["layers.wq"]

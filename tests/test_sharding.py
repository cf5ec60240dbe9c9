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

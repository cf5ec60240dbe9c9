"""The orchestrator head, the masked loss, the optimizer and the jitted train step."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from leeroo_jax.models.encoder import Encoder
from leeroo_jax.models.hf import EncoderConfig
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.training import optim, step

D, E, P = 8, 3, 2


def _model(seed=0, backbone=None):
    return Orchestrator(Head(HeadConfig(D, E, P, hidden=16, dropout=0.0), rngs=nnx.Rngs(seed)), backbone)


def test_masked_bce_matches_numpy():
    rng = np.random.default_rng(0)
    logits, target = rng.normal(size=(5, E)), rng.uniform(size=(5, E))
    mask = rng.uniform(size=(5, E)) < 0.5
    p = 1 / (1 + np.exp(-logits))
    want = -(target * np.log(p) + (1 - target) * np.log(1 - p))[mask].mean()
    got = step.masked_bce(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(mask, jnp.float32))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_unobserved_pairs_do_not_move_the_loss():
    model = _model()
    q, side = jnp.ones((4, D)), jnp.full((4, E, P), 0.3)
    mask = jnp.asarray([[1, 0, 1]] * 4, jnp.float32)
    logits = model.head(q, side)
    a = step.masked_bce(logits, jnp.zeros((4, E)), mask)
    b = step.masked_bce(logits, jnp.zeros((4, E)).at[:, 1].set(1.0), mask)  # change only masked targets
    assert float(a) == float(b)


def test_train_step_learns_a_separable_problem():
    """Expert e is right exactly when feature e of q is positive; the head must learn it."""
    rng = np.random.default_rng(0)
    model = _model()
    opt = nnx.Optimizer(model, optim.make(optim.OptimConfig(lr=3e-3, warmup_steps=10, total_steps=300)), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    losses = []
    for _ in range(300):
        q = rng.normal(size=(64, D)).astype(np.float32)
        batch = {"q": q, "side": np.full((64, E, P), 0.5, np.float32),
                 "target": (q[:, :E] > 0).astype(np.float32), "mask": np.ones((64, E), np.float32)}
        state, metrics = step.train_step(graphdef, state, batch, jax.random.key(len(losses)))
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    q = rng.normal(size=(256, D)).astype(np.float32)
    p = np.asarray(step.predict(graphdef, state, {"q": q, "side": np.full((256, E, P), 0.5, np.float32)}))
    assert ((p > 0.5) == (q[:, :E] > 0)).mean() > 0.9


def test_backbone_parameters_get_the_scaled_learning_rate():
    enc = Encoder(EncoderConfig(vocab_size=11, hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2,
                                max_position_embeddings=8, has_pooler=False), rngs=nnx.Rngs(0))
    model = _model(backbone=enc)
    labels = jax.tree.leaves(optim._labels(nnx.state(model, nnx.Param)))
    assert labels.count("backbone") + labels.count("backbone_layers") == len(jax.tree.leaves(nnx.state(enc, nnx.Param)))
    assert labels.count("backbone_layers") == len(jax.tree.leaves(nnx.state(enc.layers, nnx.Param)))
    assert labels.count("head") == len(jax.tree.leaves(nnx.state(model.head, nnx.Param)))
    before = {k: np.asarray(v) for k, v in [("bb", enc.word_embed[...]), ("head", model.head.w1[...])]}
    opt = nnx.Optimizer(model, optim.make(optim.OptimConfig(lr=1e-2, warmup_steps=1, backbone_lr_scale=0.1)),
                        wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    opt.update(model, grads)
    d_bb = np.abs(np.asarray(enc.word_embed[...]) - before["bb"]).max()
    d_head = np.abs(np.asarray(model.head.w1[...]) - before["head"]).max()
    assert d_bb == pytest.approx(0.1 * d_head, rel=0.05)  # Adam's step size is the lr: ratio = scale


def _np_gelu(x):  # the tanh form (jax.nn.gelu's default), written out
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _np_head(w, q_bd, side_bep):
    """The head's formula in NumPy: h = MLP([q ; logit f]); <h, u_e> + bias_e + <w, logit f[b, e]>."""
    side_logit = np.log(side_bep) - np.log1p(-side_bep)
    x = np.concatenate([q_bd, side_logit.reshape(len(q_bd), -1)], axis=1)
    h = _np_gelu(_np_gelu(x @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"])
    return h @ w["experts"].T + w["bias"] + side_logit @ w["side_w"]


_TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             attn_implementation="eager")
_BACKBONES = {
    "bert": (lambda t: t.BertConfig(**_TINY, max_position_embeddings=32), "BertModel", False),
    "llama": (lambda t: t.LlamaConfig(**_TINY, num_key_value_heads=2, max_position_embeddings=32,
                                      tie_word_embeddings=True), "LlamaForCausalLM", True),
}


@pytest.mark.parametrize("arch,pooling", [("bert", "mean"), ("llama", "mean"), ("llama", "last")])
def test_orchestrator_logits_match_torch_backbone_and_numpy_head(tmp_path, arch, pooling):
    """Expected logits come from transformers' torch backbone (last_hidden_state), pooled in
    NumPy over the real tokens, then the head's formula in NumPy on the head's weights; the
    model's forward and the jitted train step's forward (step.predict) must both match."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from leeroo_jax.weights.loader import load

    make_cfg, cls_name, left_pad = _BACKBONES[arch]
    torch.manual_seed(0)
    torch_model = getattr(transformers, cls_name)(make_cfg(transformers)).eval()
    torch_model.save_pretrained(tmp_path)
    loaded = load(tmp_path, tokenizer=False)

    rng = np.random.default_rng(0)
    b, t, d = 4, 10, _TINY["hidden_size"]
    lengths = np.array([10, 7, 3, 1])
    slots = np.arange(t)[None]
    mask = ((slots >= t - lengths[:, None]) if left_pad else (slots < lengths[:, None])).astype(np.int64)
    ids = rng.integers(1, 97, (b, t)) * mask
    side = rng.uniform(0.05, 0.95, (b, E, P)).astype(np.float32)

    with torch.no_grad():
        kw = dict(position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0))) if left_pad else {}
        base = getattr(torch_model, "model", torch_model)  # LlamaForCausalLM.model: the decoder stack
        hidden = base(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
        hidden = hidden.last_hidden_state.numpy().astype(np.float64)
    if pooling == "mean":
        q = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    else:  # the last real token: with left padding, the last slot
        q = hidden[np.arange(b), t - 1] if left_pad else hidden[np.arange(b), lengths - 1]

    head = Head(HeadConfig(d, E, P, hidden=16, dropout=0.1), rngs=nnx.Rngs(1))
    for name, scale in (("b1", 0.1), ("b2", 0.1), ("bias", 1.0), ("side_w", 0.5)):  # zeros at init
        getattr(head, name)[...] = jnp.asarray(rng.normal(0, scale, getattr(head, name).shape), jnp.float32)
    weights = {k: np.asarray(getattr(head, k)[...], np.float64)
               for k in ("w1", "b1", "w2", "b2", "experts", "bias", "side_w")}
    want = _np_head(weights, q, side.astype(np.float64))

    model = Orchestrator(head, loaded.model, pooling=pooling)
    got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(side)))
    tol = dict(rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got, want, **tol)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optim.make(optim.OptimConfig()), wrt=nnx.Param)))
    batch = {"tokens": ids.astype(np.int32), "attn": mask.astype(np.int32), "side": side}
    p = np.asarray(step.predict(graphdef, state, batch))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-want)), rtol=1e-4, atol=1e-5)
    # not vacuous: every term moves the logits well past the tolerance
    assert np.abs(want - _np_head(weights, q[::-1], side.astype(np.float64))).max() > 100 * tol["atol"]
    assert np.abs(want - _np_head(weights, q, side[::-1].astype(np.float64))).max() > 100 * tol["atol"]


def _encoder(num_layers=3):
    return Encoder(EncoderConfig(vocab_size=11, hidden_size=D, intermediate_size=16, num_layers=num_layers, num_heads=2,
                                 max_position_embeddings=8, has_pooler=False), rngs=nnx.Rngs(0))


def _token_batch(rng, b=6):
    tokens = rng.integers(1, 11, size=(b, 8)).astype(np.int32)
    attn = (np.arange(8)[None] < rng.integers(2, 9, size=(b, 1))).astype(np.int32)
    return {"tokens": tokens * attn, "attn": attn, "side": rng.uniform(0.1, 0.9, (b, E, P)).astype(np.float32),
            "target": (rng.uniform(size=(b, E)) < 0.5).astype(np.float32), "mask": np.ones((b, E), np.float32)}


def test_frozen_layers_change_gradients_not_outputs():
    """frozen_layers=n: same forward; zero gradient below layer n and for the embeddings, and
    the same gradient as full autodiff above it."""
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 11, size=(3, 8)))
    mask = jnp.ones((3, 8), jnp.int32).at[1, 5:].set(0)
    enc = _encoder()
    graphdef, params = nnx.split(enc)

    def f(params, frozen):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, params)(tokens, mask, frozen_layers=frozen).hidden))

    np.testing.assert_allclose(f(params, 1), f(params, 0), rtol=1e-6)
    g_full, g_top = jax.grad(f)(params, 0), jax.grad(f)(params, 1)
    for name in ("wq", "w_in", "out_ln_scale"):
        full, top = np.asarray(g_full["layers"][name][...]), np.asarray(g_top["layers"][name][...])
        assert np.all(top[0] == 0) and np.abs(full[0]).max() > 0
        np.testing.assert_allclose(top[1:], full[1:], rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(g_top["word_embed"][...]) == 0)


def test_last_k_training_moves_only_the_top_layers_and_the_head():
    rng = np.random.default_rng(1)
    enc = _encoder()
    model = Orchestrator(Head(HeadConfig(D, E, P, hidden=16, dropout=0.1), rngs=nnx.Rngs(0)), enc, frozen_layers=1)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    cfg = optim.OptimConfig(lr=1e-2, warmup_steps=1, total_steps=10, weight_decay=0.1, num_layers=3, trainable_layers=2)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optim.make(cfg), wrt=nnx.Param)))
    for s in range(3):
        state, metrics = step.train_step(graphdef, state, _token_batch(rng), jax.random.key(s))
        assert np.isfinite(float(metrics["loss"]))
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)))
    bb0, bb1 = before["backbone"], after["backbone"]
    np.testing.assert_array_equal(bb1["word_embed"], bb0["word_embed"])  # weight decay did not touch them
    for name in ("wq", "w_out", "attn_ln_bias"):
        np.testing.assert_array_equal(bb1["layers"][name][0], bb0["layers"][name][0])
        assert np.abs(bb1["layers"][name][1:] - bb0["layers"][name][1:]).max() > 0
    assert np.abs(after["head"]["w1"] - before["head"]["w1"]).max() > 0


def test_layer_decay_scales_each_layer_step():
    enc = _encoder()
    model = _model(backbone=enc)
    w0 = np.asarray(enc.layers.w_in[...])
    cfg = optim.OptimConfig(lr=1e-2, warmup_steps=1, weight_decay=0.0, backbone_lr_scale=0.5, layer_decay=0.5,
                            num_layers=3)
    opt = nnx.Optimizer(model, optim.make(cfg), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)  # the warmup's step 0 has lr 0
    opt.update(model, grads)
    step_per_layer = np.abs(np.asarray(enc.layers.w_in[...]) - w0).reshape(3, -1).max(1)
    # with a constant gradient Adam's step is the lr: layer l moves lr * 0.5 * 0.5 ** (2 - l)
    np.testing.assert_allclose(step_per_layer, 1e-2 * 0.5 * np.array([0.25, 0.5, 1.0]), rtol=1e-4)


def test_gradient_accumulation_equals_one_big_batch():
    """accumulate=2: odd micro-steps leave the weights alone, even ones apply the mean gradient,
    landing where one step on the two micro-batches together lands. (Two updates: the
    warmup schedule's first update has lr 0.)"""
    rng = np.random.default_rng(3)
    micro = [_token_batch(rng, 4) for _ in range(4)]
    big = [{k: np.concatenate([micro[i][k], micro[i + 1][k]]) for k in micro[0]} for i in (0, 2)]

    def build(acc):
        model = Orchestrator(Head(HeadConfig(D, E, P, hidden=16, dropout=0.0), rngs=nnx.Rngs(0)), _encoder(2))
        cfg = optim.OptimConfig(lr=1e-2, warmup_steps=1, total_steps=10, num_layers=2, accumulate=acc)
        return nnx.split((model, nnx.Optimizer(model, optim.make(cfg), wrt=nnx.Param)))

    def params(graphdef, state):
        return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)))

    g, s = build(2)
    p0 = params(g, s)
    for i, b in enumerate(micro):
        s, _ = step.train_step(g, s, b, jax.random.key(i))
        if i == 2:  # one micro-step into the second update: still the first update's weights
            p_mid = params(g, s)
    g1, s1 = build(1)
    for i, b in enumerate(big):
        s1, _ = step.train_step(g1, s1, b, jax.random.key(i))
        if i == 0:
            p_big0 = params(g1, s1)
    moved = 0.0
    for a, b, mid, b0, c in zip(*map(jax.tree.leaves, (params(g, s), params(g1, s1), p_mid, p_big0, p0))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(mid, b0, rtol=1e-5, atol=1e-7)
        moved = max(moved, float(np.abs(b - c).max()))
    assert moved > 1e-4


def test_an_ensemble_averages_its_members_p_and_trains_each_on_its_own_loss():
    """M = 3 heads: the logits are logit(mean of the members' p), each member's by the head's
    NumPy formula on its own slice of the weights; the train step's loss is the NumPy mean of
    the members' masked BCE; members start from different weights, each at one head's scale."""
    rng = np.random.default_rng(0)
    m, h = 3, 16
    head = Head(HeadConfig(D, E, P, hidden=h, dropout=0.0, members=m), rngs=nnx.Rngs(0))
    for name in ("b1", "b2", "bias", "side_w"):  # zeros at init: give every term a say
        getattr(head, name)[...] = jnp.asarray(rng.normal(0, 0.3, getattr(head, name).shape), jnp.float32)
    w = {k: np.asarray(getattr(head, k)[...], np.float64) for k in ("w1", "b1", "w2", "b2", "experts", "bias", "side_w")}
    assert w["w1"].shape == (m, D + E * P, h) and not np.allclose(w["w1"][0], w["w1"][1])
    limit = np.sqrt(6 / (D + E * P + h))  # glorot-uniform bound of one member's [D_in, H]
    assert limit * 0.8 < np.abs(w["w1"]).max() <= limit
    q, side = rng.normal(size=(5, D)), rng.uniform(0.05, 0.95, (5, E, P))
    member = np.stack([_np_head({k: v[i] for k, v in w.items()}, q, side) for i in range(m)])  # [M, B, E]
    p = (1 / (1 + np.exp(-member))).mean(0)
    got = np.asarray(head(jnp.asarray(q, jnp.float32), jnp.asarray(side, jnp.float32)))
    np.testing.assert_allclose(got, np.log(p / (1 - p)), rtol=1e-4, atol=1e-4)
    assert np.abs(member[0] - member[1]).max() > 0.1  # not one head three times

    target, mask = (rng.uniform(size=(5, E)) < 0.5).astype(np.float32), (rng.uniform(size=(5, E)) < 0.7).astype(np.float32)
    pm = 1 / (1 + np.exp(-member))
    bce = -(target * np.log(pm) + (1 - target) * np.log(1 - pm))  # [M, B, E]
    want = np.mean([(b * mask).sum() / mask.sum() for b in bce])
    model = Orchestrator(head)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optim.make(optim.OptimConfig()), wrt=nnx.Param)))
    batch = {"q": q.astype(np.float32), "side": side.astype(np.float32), "target": target, "mask": mask}
    _, metrics = step.train_step(graphdef, state, batch, jax.random.key(0))
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-4)

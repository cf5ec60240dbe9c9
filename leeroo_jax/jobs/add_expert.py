"""Add experts to a trained orchestrator without retraining it.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=add_expert \
        --config.checkpoint=checkpoints/mmlu_holdout --config.add_expert.probes=50

The experts in config.pool that the checkpoint's pool lacks are new; their outcomes come from
the record store (config.data.records; a live expert's are what the scoring job recorded). For
each, K graded TRAIN questions (the probes, drawn with add_expert.seed) are all that is known of it. Everything
trained stays frozen; only the new expert's row of the head is fitted:

    logit[b, new] = <h_b, u_new> + bias_new + <w, logit(f[b, new, :])>

h_b (the query representation) and w (the shared side-feature weights) are the trained ones,
f[b, new, :] are the new expert's retrieval features computed from its probes alone, and the
new side features do not enter h (their rows of the first layer are zero), so the old experts'
logits are bit-for-bit what they were. (u_new, bias_new) minimise the BCE on the probes plus
`l2 * |u_new - mean(u_old)|^2`: with K = 50 answers and H = 64 dims the fit must be pulled
toward the typical expert. The result is a new run directory (config.json with the larger
pool and data.probes naming the probes file, ckpt/, the report on the eval split) that
`route` and `train` read like any other run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from leeroo_jax import distributed, fileio, sharding
from leeroo_jax.data.dataset import Dataset, restrict_to_probes
from leeroo_jax.errors import ConfigError
from leeroo_jax.eval import evaluate
from leeroo_jax.eval import report as report_lib
from leeroo_jax.jobs import common
from leeroo_jax.jobs.runs import load_run
from leeroo_jax.training import trainer as trainer_lib
from leeroo_jax.training.checkpoint import Checkpointer, identity


def _new_config(cfg, base_cfg):
    old = [e["name"] for e in base_cfg.pool]
    names = [e["name"] for e in cfg.pool]
    missing = [n for n in old if n not in names]
    if missing:
        raise ConfigError(f"config.pool lacks {missing} of the checkpoint's pool; add_expert only grows a pool")
    new = [dict(e) for e in cfg.pool if e["name"] not in old]
    if not new:
        raise ConfigError("config.pool has no expert the checkpoint lacks; nothing to add")
    out = copy.deepcopy(base_cfg)
    out.pool = [dict(e) for e in base_cfg.pool] + new  # old rows keep their indices
    out.data.extra_experts = "skip"
    if cfg.data.records:  # e.g. a live expert's scored records (score --config.job=experts)
        out.data.records = cfg.data.records
    out.run_name = cfg.add_expert.run_name or f"{base_cfg.run_name}+{len(new)}"
    return out, [e["name"] for e in new]


def _draw_probes(data: Dataset, names: list[str], k: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    tr = data.rows("train")
    probes = {}
    for name in names:
        cand = tr[data.observed[tr, list(data.pool.names).index(name)]]
        if len(cand) < k:
            raise ConfigError(f"{name} has {len(cand)} graded TRAIN questions, fewer than add_expert.probes={k}")
        probes[name] = [data.questions[r].id for r in np.sort(rng.choice(cand, k, replace=False))]
    return probes


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef, state, batch):
    model = nnx.merge(graphdef, state)[0]
    q = model.embed(batch["tokens"], batch["attn"]) if "tokens" in batch else batch["q"]
    return model.head.features(q, batch["side"])


@functools.partial(jax.jit, static_argnames=("steps",))
def fit_row(h_kh, side_logit_kp, side_w_p, y_k, u0_h, l2, steps: int = 500):
    """(u [H], bias []) minimising mean BCE(<h, u> + bias + side_logit . w, y) + l2 |u - u0|^2."""
    def loss(params):
        u, b = params
        logits = h_kh @ u + b + side_logit_kp @ side_w_p
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y_k)) + l2 * jnp.sum((u - u0_h) ** 2)

    tx = optax.adam(1e-2)
    rate = jnp.clip(jnp.mean(y_k), 0.02, 0.98)
    params = (u0_h, jnp.log(rate) - jnp.log1p(-rate) - jnp.mean(h_kh @ u0_h + side_logit_kp @ side_w_p))

    def body(_, carry):
        params, opt_state = carry
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))[0]


def run(cfg) -> dict:
    base = load_run(cfg.checkpoint, records=cfg.data.records, mesh=cfg.mesh.to_dict())  # this command's devices
    if base.cfg.train.get("ensemble", 1) > 1:
        raise ConfigError(f"add_expert grows one head, but {cfg.checkpoint} is an ensemble of "
                          f"{base.cfg.train.ensemble} heads; retrain it with --config.train.ensemble=1 first")
    new_cfg, new_names = _new_config(cfg, base.cfg)
    out = common.output_dir(new_cfg)
    full = common.load_dataset(new_cfg, embed=False)  # every recorded outcome: the probes' source, the eval truth
    full.vecs = vecs = base.data.vecs  # the same questions through the same backbone
    probes = _draw_probes(full, new_names, cfg.add_expert.probes, cfg.add_expert.seed)
    if distributed.is_main_process():
        fileio.write_json(out / "probes.json", probes, indent=1)
    new_cfg.data.probes = str(fileio.resolved(out / "probes.json"))
    # what load_dataset(new_cfg) gives from here on: the new experts' outcomes restricted to their probes
    known = dataclasses.replace(full, observed=restrict_to_probes(full.observed, full.questions, full.names, probes))
    trainer = trainer_lib.build(new_cfg, known)

    # copy every trained weight; the head grows by one expert row (and zero first-layer rows)
    old = nnx.to_pure_dict(base.trainer.state[0])
    new = nnx.to_pure_dict(trainer.state[0])
    e_old, p_side = len(base.data.pool), trainer.side.shape[-1]

    def graft(path, new_leaf):
        leaf = functools.reduce(lambda d, k: d[k], path, old)
        if leaf.shape == new_leaf.shape:
            return leaf
        name = path[-1]
        if name in ("experts", "bias"):
            return jnp.concatenate([leaf, jnp.asarray(new_leaf)[e_old:]])
        if name == "w1":
            d = vecs.shape[1] + e_old * p_side  # [q ; side of the old experts] rows
            return jnp.concatenate([leaf[:d], jnp.zeros_like(new_leaf[d:])])
        raise ValueError(f"cannot grow parameter {'/'.join(map(str, path))} {leaf.shape} -> {new_leaf.shape}")

    grafted = jax.tree_util.tree_map_with_path(lambda p, x: graft(tuple(k.key for k in p), x), new)
    nnx.replace_by_pure_dict(trainer.state[0], grafted)

    # fit each new row on its probes
    ids = {q.id: i for i, q in enumerate(known.questions)}
    names = list(known.pool.names)
    head_state = nnx.to_pure_dict(trainer.state[0])["head"]
    u_old = sharding.gather(head_state["experts"])[:e_old]
    experts, bias = sharding.gather(head_state["experts"]).copy(), sharding.gather(head_state["bias"]).copy()
    side_w = sharding.gather(head_state["side_w"])
    for name in new_names:
        rows = np.array([ids[q] for q in probes[name]])
        e = names.index(name)
        query, n_global, _ = trainer._query(rows)  # this process's share of the probes' batch
        h, side_logit = _features(trainer.graphdef, trainer.state, sharding.shard_batch(query, trainer.mesh, n_global))
        n = len(rows)
        h = sharding.gather(h)[0, :n]  # [K, H] on every process: the row fit below is tiny, run it everywhere
        sl = sharding.gather(side_logit)[:n, e] if side_logit is not None else np.zeros((n, 1), np.float32)
        u, b = fit_row(h, sl, side_w[: sl.shape[-1]], jnp.asarray(full.outcome[rows, e], jnp.float32),
                       jnp.asarray(u_old.mean(0)), float(cfg.add_expert.l2))
        experts[e], bias[e] = np.asarray(u), float(b)
    grown = {"experts": experts, "bias": bias}  # back onto the parameters' own (global) shardings
    nnx.replace_by_pure_dict(trainer.state[0], {"head": {k: jax.device_put(v, head_state[k].sharding)
                                                         for k, v in grown.items()}})

    val = evaluate.val_hook(known, new_cfg.eval.weak, trainer.predict)()  # the probes are all it knows
    common.write_config(new_cfg, out)
    ckpt = Checkpointer(out / "ckpt", async_save=False)
    ckpt.save(base.step, nnx.to_pure_dict(trainer.state),
              {"step": base.step, "added": new_names, "config": identity(new_cfg)}, metrics=val)
    ckpt.close()

    ev = full.eval_set(new_cfg.eval.split)
    mine = {"orchestrator": (trainer.predict(ev.rows), trainer.predict(full.rows("val")))}
    rep = evaluate.evaluate(new_cfg, full, ev, evaluate.with_references(new_cfg, full, ev, mine))
    rep["added_experts"] = {n: {"probes": len(probes[n])} for n in new_names}
    if not distributed.is_main_process():
        return rep
    md = report_lib.write(rep, out, at=new_cfg.eval.weak, reach=new_cfg.eval.strong)
    print(md)
    print(f"added {new_names} from {cfg.add_expert.probes} probes each; wrote {out}/config.json, probes.json, ckpt/, report.*")
    return rep

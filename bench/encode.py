"""MiniLM sentence embeddings of MMLU questions: ours (JAX) vs transformers (torch), questions/s.

Workload: the first N (default 1,000) MMLU test questions, question text only, truncated to
256 tokens, mean-pooled all-MiniLM-L6-v2 embeddings (the sentence-transformers recipe).
Tokenization happens once, outside both timings: the figure is model throughput.

Baseline: transformers `AutoModel`, torch f32, all cores, batch 64 in dataset order, each
batch padded to its longest row (what a straightforward user writes).
Ours: the library's `Encoder` + `layers.mean_pool` under one `jax.jit`; rows sorted by
length, in batches of 16 padded to a multiple of 4 tokens (one executable per shape,
compiled in a warm-up call whose time is reported apart; persistent compile cache on).
Timing: per-batch best of --repeats passes, torch and ours interleaved
(common.time_batches). Parity: cosine(ours, torch) for every question. About 2 minutes.

    .venv/bin/python bench/encode.py [--n 1000] [--batch 16] [--step 4] [--repeats 3]
"""

from __future__ import annotations

import os
import sys

# Run with the repository root on the path instead of bench/: a bench/ file named like a stdlib module would shadow
# the stdlib `select` module that subprocess (hence torch and jax) imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

MAX_LEN = 256
TORCH_BATCH = 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16, help="our batch size (torch's is fixed at 64)")
    ap.add_argument("--step", type=int, default=4, help="our padded lengths are multiples of this")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch = common.setup_torch()
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from transformers import AutoModel, AutoTokenizer

    from leeroo_jax import compile_cache
    from leeroo_jax.data.mmlu import load_questions
    from leeroo_jax.models import layers
    from leeroo_jax.weights import assets
    from leeroo_jax.weights.loader import load

    compile_cache.enable()
    common.print_machine_context()

    texts = [q.question for q in load_questions(limit=args.n)]
    path = assets.minilm_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tok(texts, truncation=True, max_length=MAX_LEN)["input_ids"]  # ragged, unpadded
    lengths = [len(x) for x in ids]
    real = sum(lengths)
    print(f"context: {len(texts)} questions, tokens/question mean {real / len(texts):.1f} max {max(lengths)}")

    # ---- baseline: torch, batch 64, dataset order, padded to each batch's longest row ----
    tmodel = AutoModel.from_pretrained(path, local_files_only=True).eval().float()
    torch_inputs = [tok.pad({"input_ids": ids[s:s + TORCH_BATCH]}, return_tensors="pt")
                    for s in range(0, len(ids), TORCH_BATCH)]

    def torch_call(enc):
        h = tmodel(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()

    # ---- ours: length-bucketed batches, one jitted program per (batch, length) shape -----
    graphdef, state = nnx.split(load(path, tokenizer=False).model)

    @jax.jit
    def embed(state, tokens_bt, mask_bt):
        return layers.mean_pool(nnx.merge(graphdef, state)(tokens_bt, mask_bt).hidden, mask_bt)

    plan = common.length_buckets(lengths, args.batch, args.step)
    ours_inputs = []
    for b, t, rows in plan:
        x = np.full((b, t), tok.pad_token_id or 0, np.int32)
        m = np.zeros((b, t), np.int32)
        for r, i in enumerate(rows):
            x[r, :lengths[i]], m[r, :lengths[i]] = ids[i], 1
        m[len(rows):, 0] = 1  # dummy rows filling the last batch: one token each, discarded
        ours_inputs.append((jnp.asarray(x), jnp.asarray(m)))

    def ours_call(xm):
        return np.asarray(embed(state, *xm))  # np.asarray blocks until the result is ready

    ours_calls = [lambda xm=xm: ours_call(xm) for xm in ours_inputs]
    shapes = [x.shape for x, _ in ours_inputs]
    warm = common.warm_up(ours_calls, shapes)  # compile each shape once, outside the timing
    torch_call(torch_inputs[0])  # warm torch's thread pool and allocator

    timed = common.time_batches({"torch": [lambda e=e: torch_call(e) for e in torch_inputs],
                                 "ours": ours_calls}, args.repeats)
    t_torch, t_ours = timed["torch"][0], timed["ours"][0]
    emb_torch = np.concatenate(timed["torch"][1])
    emb_ours = np.empty_like(emb_torch)
    for (_, _, rows), out in zip(plan, timed["ours"][1]):
        emb_ours[rows] = out[:len(rows)]

    print(f"ours: compile (or persistent-cache load) {common.compile_seconds(warm, timed['ours'][2]):.1f} s "
          f"for {len(warm)} shapes {sorted(set(shapes))}, excluded from the timing")
    torch_pad = sum(e["input_ids"].numel() for e in torch_inputs) / real
    ours_pad = sum(x.size for x, _ in ours_inputs) / real
    print(f"baseline: torch f32 batch {TORCH_BATCH} unsorted: {t_torch:.2f} s, {len(texts) / t_torch:.1f} q/s, "
          f"{real / t_torch:.0f} real tokens/s (padded/real {torch_pad:.2f})")
    print(f"ours: jax f32 batch {args.batch} bucketed: {t_ours:.2f} s, {len(texts) / t_ours:.1f} q/s, "
          f"{real / t_ours:.0f} real tokens/s (padded/real {ours_pad:.2f})")
    cos = np.sum(emb_ours * emb_torch, 1) / (np.linalg.norm(emb_ours, axis=1) * np.linalg.norm(emb_torch, axis=1))
    print(f"parity: cosine(ours, torch) min {cos.min():.7f} mean {cos.mean():.7f} "
          f"({'OK' if cos.min() > 0.9999 else 'FAIL'}: want > 0.9999)")
    common.result("minilm_encode_mmlu", len(texts) / t_ours, len(texts) / t_torch, "questions/s")


if __name__ == "__main__":
    main()

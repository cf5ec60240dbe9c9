"""MiniLM sentence embeddings of MMLU questions: ours (JAX) vs transformers (torch), questions/s.

Workload: the first N (default 1,000) MMLU test questions, question text only, truncated to
256 tokens, mean-pooled all-MiniLM-L6-v2 embeddings (the sentence-transformers recipe).
Tokenization happens once, outside both timings: the figure is model throughput.

Ours: the library's `Encoder` + `layers.mean_pool` under one `jax.jit`; rows sorted by
length, in batches of 16 padded to a multiple of 4 tokens (one executable per shape,
compiled in a warm-up call whose time is reported apart; persistent compile cache on).
Baseline: transformers `AutoModel`, torch f32, all cores, the same mean pooling. The RESULT
line compares equal batching: torch runs the very same batches as ours (same rows,
length-sorted, same padded length). A second line compares ours with torch on batch 64 in
dataset order, each batch padded to its longest row (what a straightforward user writes).
Each side's matmul FLOPs per second (2 x weight parameters per token plus attention's two
T x T products, padding included) are also given as a share of its own f32 matmul ceiling,
a 2048^2 matmul measured in the same run (XLA for ours, torch for the baseline).
Timing: per-batch best of --repeats passes, the three sides interleaved call by call
(common.time_batches); the spread of per-pass ratios is printed. Parity: cosine(ours,
torch) for every question. About 3 minutes.

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
    ap.add_argument("--batch", type=int, default=16, help="batch size of the sorted batches (unsorted torch: 64)")
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
    ceiling = common.print_machine_context()

    texts = [q.question for q in load_questions(limit=args.n)]
    path = assets.minilm_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tok(texts, truncation=True, max_length=MAX_LEN)["input_ids"]  # ragged, unpadded
    lengths = [len(x) for x in ids]
    real = sum(lengths)
    print(f"context: {len(texts)} questions, tokens/question mean {real / len(texts):.1f} max {max(lengths)}")

    # ---- ours: length-sorted batches, one jitted program per (batch, length) shape -----------
    graphdef, state = nnx.split(load(path, tokenizer=False).model)
    cfg = nnx.merge(graphdef, state).cfg

    @jax.jit
    def embed(state, tokens_bt, mask_bt):
        return layers.mean_pool(nnx.merge(graphdef, state)(tokens_bt, mask_bt).hidden, mask_bt)

    pad_id = tok.pad_token_id or 0
    plan = common.length_buckets(lengths, args.batch, args.step)

    def right_padded(rows, t):
        x = np.full((len(rows), t), pad_id, np.int32)
        m = np.zeros((len(rows), t), np.int32)
        for r, i in enumerate(rows):
            x[r, :lengths[i]], m[r, :lengths[i]] = ids[i], 1
        return x, m

    # a short last batch keeps its rows (no dummy rows: the same work as torch's)
    ours_inputs = [tuple(jnp.asarray(a) for a in right_padded(rows, t)) for _, t, rows in plan]

    def ours_call(xm):
        return np.asarray(embed(state, *xm))  # np.asarray blocks until the result is ready

    # ---- baseline: transformers; "sorted": the very same batches as ours (equal batching);
    # "unsorted": batch 64 in dataset order, each padded to its longest row ----------------
    tmodel = AutoModel.from_pretrained(path, local_files_only=True).eval().float()
    to_torch = lambda xm: tuple(torch.from_numpy(np.asarray(a, np.int64)) for a in xm)  # noqa: E731
    sorted_inputs = [to_torch(right_padded(rows, t)) for _, t, rows in plan]
    unsorted_rows = [list(range(s, min(s + TORCH_BATCH, len(ids)))) for s in range(0, len(ids), TORCH_BATCH)]
    unsorted_inputs = [to_torch(right_padded(rows, max(lengths[i] for i in rows))) for rows in unsorted_rows]

    def torch_call(xm):
        x, mask = xm
        h = tmodel(input_ids=x, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()

    ours_calls = [lambda xm=xm: ours_call(xm) for xm in ours_inputs]
    shapes = [tuple(x.shape) for x, _ in ours_inputs]
    warm = common.warm_up(ours_calls, shapes)  # compile each shape once, outside the timing
    torch_call(sorted_inputs[0])  # warm torch's thread pool and allocator

    timed = common.time_batches({"torch_sorted": [lambda e=e: torch_call(e) for e in sorted_inputs],
                                 "torch_unsorted": [lambda e=e: torch_call(e) for e in unsorted_inputs],
                                 "ours": ours_calls}, args.repeats)
    ceiling.measure(2)  # more rounds of the ceiling, now that the run has warmed everything
    t_sorted, t_unsorted, t_ours = (timed[k][0] for k in ("torch_sorted", "torch_unsorted", "ours"))

    def scatter(batches_rows, outs):
        return common.scatter_rows(len(ids), cfg.hidden_size, batches_rows, outs)

    emb_ours = scatter([rows for _, _, rows in plan], timed["ours"][1])
    emb_sorted = scatter([rows for _, _, rows in plan], timed["torch_sorted"][1])
    emb_unsorted = scatter(unsorted_rows, timed["torch_unsorted"][1])

    D, F = cfg.hidden_size, cfg.intermediate_size
    attn_width = cfg.num_heads * cfg.head_dim

    def flops(batch_shapes):
        return sum(common.transformer_flops(b, t, layers=cfg.num_layers, layer_params=4 * D * attn_width + 2 * D * F,
                                            attn_width=attn_width) for b, t in batch_shapes)

    f_ours, f_sorted = flops(shapes), flops([tuple(x.shape) for x, _ in sorted_inputs])
    f_unsorted = flops([tuple(x.shape) for x, _ in unsorted_inputs])
    pad = lambda inputs: sum(x.numel() if hasattr(x, "numel") else x.size for x, _ in inputs) / real  # noqa: E731
    n = len(texts)
    print(f"ours: compile (or persistent-cache load) {common.compile_seconds(warm, timed['ours'][2]):.1f} s "
          f"for {len(warm)} shapes, excluded from the timing")
    print(f"ours: jax f32 batch {args.batch} length-sorted: {t_ours:.2f} s, {n / t_ours:.1f} q/s, "
          f"{real / t_ours:.0f} real tokens/s (padded/real {pad(ours_inputs):.2f}); {ceiling.share('jax', f_ours, t_ours)}")
    print(f"baseline: torch f32 same batches (length-sorted): {t_sorted:.2f} s, {n / t_sorted:.1f} q/s, "
          f"{real / t_sorted:.0f} real tokens/s (padded/real {pad(sorted_inputs):.2f}); "
          f"{ceiling.share('torch', f_sorted, t_sorted)}")
    print(f"baseline: torch f32 batch {TORCH_BATCH} unsorted: {t_unsorted:.2f} s, {n / t_unsorted:.1f} q/s, "
          f"{real / t_unsorted:.0f} real tokens/s (padded/real {pad(unsorted_inputs):.2f}); "
          f"{ceiling.share('torch', f_unsorted, t_unsorted)}")
    print(f"spread of per-pass ratios (ours vs torch same batches): "
          f"{common.spread([a / b for a, b in zip(timed['torch_sorted'][3], timed['ours'][3])])}")
    print(f"unsorted: ours length-sorted vs torch batch {TORCH_BATCH} unsorted: ratio {t_unsorted / t_ours:.2f} "
          f"(of which torch's own sorting gain {t_unsorted / t_sorted:.2f}x)")
    for name, emb in (("same batches", emb_sorted), ("unsorted", emb_unsorted)):
        cos = np.sum(emb_ours * emb, 1) / (np.linalg.norm(emb_ours, axis=1) * np.linalg.norm(emb, axis=1))
        print(f"parity vs torch {name}: cosine(ours, torch) min {cos.min():.7f} mean {cos.mean():.7f} "
              f"({'OK' if cos.min() > 0.9999 else 'FAIL'}: want > 0.9999)")
    common.result("minilm_encode_mmlu", n / t_ours, n / t_sorted, "questions/s")


if __name__ == "__main__":
    main()

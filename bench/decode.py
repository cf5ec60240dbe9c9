"""SmolLM2-135M zero-shot MMLU letter scoring: ours (JAX) vs transformers (torch), tokens/s.

Workload: N MMLU zero-shot prompts (`zero_shot_prompt`), one forward pass each giving the
next-token log-probabilities of " A" .. " D" at the prompt's last token. Throughput counts
real (non-pad) prompt tokens; tokenization is outside both timings. --sample stride (the
default) takes N questions evenly spaced over the whole test split (55 subjects at N=128,
49-515 tokens); --sample first takes the first N, which in the vendored file are nearly
all moral_scenarios, every prompt 113-153 tokens long (little padding to save there).

Ours: `leeroo_jax.experts.mcq.letter_logprobs` on prompts sorted by length, in batches of
up to 16 rows and 2048 tokens padded to a multiple of 8 (one executable per shape, compiled
in a warm-up call whose time is reported apart; persistent compile cache on).
Baseline: transformers `LlamaForCausalLM`, torch f32, all cores, `logits_to_keep=1` (logits
at the last position only, the same work as ours), left-padded, RoPE positions that skip
the padding (as ours). The RESULT line compares equal batching: torch runs the very same
batches as ours (same rows, length-sorted, padded to the same length). A second line
compares ours with torch on batch 16 in sample order, each batch padded to its longest
prompt (what a plain loop does; lm-eval sorts by length, so a torch user gets most of the
sorting gain too). Each side's matmul FLOPs (2 x weight parameters per token, attention's
two T x T products, the head at the last position; padding included) per second are also
given as a share of its own f32 matmul ceiling, a 2048^2 matmul measured in the same run
(XLA for ours, torch for the baseline).
Timing: per-batch best of --repeats passes, the three sides interleaved call by call
(common.time_batches); the spread of per-pass ratios is printed. Parity: the predicted
letters agree. About 6 minutes on 2 idle cores.

    .venv/bin/python bench/decode.py [--n 128] [--sample stride|first] [--batch 16]
                                     [--step 8] [--max-tokens 2048] [--repeats 3]
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
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

TORCH_BATCH = 16
WEIGHTS_WAIT_S = 20 * 60  # another job may still be converting the GGUF checkpoint


def wait_for(path, timeout_s: float) -> None:
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout_s:
            sys.exit(f"{path} did not appear within {timeout_s:.0f} s; run `python -m leeroo_jax.weights.assets`")
        print(f"waiting for {path} ...", flush=True)
        time.sleep(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--sample", choices=("stride", "first"), default="stride")
    ap.add_argument("--batch", type=int, default=16, help="batch size of the sorted batches (unsorted torch: 16)")
    ap.add_argument("--step", type=int, default=8, help="our padded lengths are multiples of this")
    ap.add_argument("--max-tokens", type=int, default=2048, help="our rows x length cap per batch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch = common.setup_torch()
    from transformers import AutoTokenizer, LlamaForCausalLM

    from leeroo_jax import compile_cache
    from leeroo_jax.data.mmlu import load_questions, zero_shot_prompt
    from leeroo_jax.experts import mcq
    from leeroo_jax.weights import assets
    from leeroo_jax.weights.loader import load

    compile_cache.enable()
    path = assets.smollm2_dir()
    wait_for(path / "model.safetensors", WEIGHTS_WAIT_S)
    ceiling = common.print_machine_context()

    questions = load_questions(limit=None if args.sample == "stride" else args.n)
    if args.sample == "stride":
        questions = questions[:: max(1, len(questions) // args.n)][: args.n]
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tok([zero_shot_prompt(q) for q in questions])["input_ids"]  # ragged, unpadded
    lengths = [len(x) for x in ids]
    real = sum(lengths)
    letter_ids = mcq.letter_token_ids(tok, "ABCD")  # MMLU: four options
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    print(f"context: {len(ids)} prompts ({args.sample}, {len({q.subject for q in questions})} subjects), "
          f"tokens/prompt mean {real / len(ids):.1f} min {min(lengths)} max {max(lengths)}")

    # ---- ours: length-sorted batches through the letter-scoring kernel ---------------------
    model = load(path, tokenizer=False).model
    plan = common.length_buckets(lengths, args.batch, args.step, args.max_tokens)
    ours_inputs = []
    for _, t, rows in plan:  # a short last batch keeps its rows (no dummy rows: the same work as torch's)
        x = np.full((len(rows), t), pad_id, np.int32)
        m = np.zeros((len(rows), t), np.int32)
        for r, i in enumerate(rows):  # right padding: positions and last token come from the mask
            x[r, :lengths[i]], m[r, :lengths[i]] = ids[i], 1
        ours_inputs.append((x, m))

    def ours_call(xm):
        return np.asarray(mcq.letter_logprobs(model, *xm, letter_ids))  # blocks until ready

    # ---- baseline: transformers, last-position logits, left-padded -----------------------
    # "sorted": the same batches as ours (rows, order, padded length; no dummy rows), the
    # equal-batching comparison. "unsorted": batch 16 in sample order, each padded to its
    # longest prompt, what a straightforward loop does.
    tmodel = LlamaForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()

    def left_padded(rows, t):
        x = np.full((len(rows), t), pad_id, np.int64)
        m = np.zeros((len(rows), t), np.int64)
        for r, i in enumerate(rows):
            x[r, t - lengths[i]:], m[r, t - lengths[i]:] = ids[i], 1
        pos = np.maximum(np.cumsum(m, -1) - 1, 0)  # positions count real tokens only (as ours)
        return torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(pos)

    sorted_inputs = [left_padded(rows, t) for _, t, rows in plan]
    unsorted_rows = [list(range(s, min(s + TORCH_BATCH, len(ids)))) for s in range(0, len(ids), TORCH_BATCH)]
    unsorted_inputs = [left_padded(rows, max(lengths[i] for i in rows)) for rows in unsorted_rows]
    t_letters = torch.as_tensor(letter_ids, dtype=torch.long)

    def torch_call(inp):
        x, m, pos = inp
        logits = tmodel(input_ids=x, attention_mask=m, position_ids=pos, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), -1)[:, t_letters].numpy()

    ours_calls = [lambda xm=xm: ours_call(xm) for xm in ours_inputs]
    shapes = [x.shape for x, _ in ours_inputs]
    warm = common.warm_up(ours_calls, shapes)  # compile each shape once, outside the timing
    torch_call(sorted_inputs[0])  # warm torch's thread pool and allocator

    timed = common.time_batches({"torch_sorted": [lambda i=i: torch_call(i) for i in sorted_inputs],
                                 "torch_unsorted": [lambda i=i: torch_call(i) for i in unsorted_inputs],
                                 "ours": ours_calls}, args.repeats)
    ceiling.measure(2)  # more rounds of the ceiling, now that the run has warmed everything
    t_sorted, t_unsorted, t_ours = (timed[k][0] for k in ("torch_sorted", "torch_unsorted", "ours"))

    def scatter(batches_rows, outs):
        return common.scatter_rows(len(ids), len(letter_ids), batches_rows, outs)

    lp_ours = scatter([rows for _, _, rows in plan], timed["ours"][1])
    lp_sorted = scatter([rows for _, _, rows in plan], timed["torch_sorted"][1])
    lp_unsorted = scatter(unsorted_rows, timed["torch_unsorted"][1])

    cfg = model.cfg
    D, H, K, d, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size

    def flops(batch_shapes):  # last-position logits only: the head runs on one row per prompt
        return sum(common.transformer_flops(b, t, layers=cfg.num_layers, layer_params=D * (2 * H * d + 2 * K * d + 3 * F),
                                            attn_width=H * d, head_params=D * cfg.vocab_size, head_rows=b)
                   for b, t in batch_shapes)

    f_ours = flops(shapes)
    f_sorted = flops([tuple(x.shape) for x, _, _ in sorted_inputs])
    f_unsorted = flops([tuple(x.shape) for x, _, _ in unsorted_inputs])
    ours_pad = sum(x.size for x, _ in ours_inputs) / real
    sorted_pad = sum(x.numel() for x, _, _ in sorted_inputs) / real
    unsorted_pad = sum(x.numel() for x, _, _ in unsorted_inputs) / real

    print(f"ours: compile (or persistent-cache load) {common.compile_seconds(warm, timed['ours'][2]):.1f} s "
          f"for {len(warm)} shapes {sorted(set(shapes))}, excluded from the timing")
    print(f"ours: jax f32 batch <={args.batch} length-sorted: {t_ours:.2f} s, {real / t_ours:.1f} tokens/s "
          f"(padded/real {ours_pad:.2f}); {ceiling.share('jax', f_ours, t_ours)}")
    print(f"baseline: torch f32 same batches (length-sorted): {t_sorted:.2f} s, {real / t_sorted:.1f} tokens/s "
          f"(padded/real {sorted_pad:.2f}); {ceiling.share('torch', f_sorted, t_sorted)}")
    print(f"baseline: torch f32 batch {TORCH_BATCH} unsorted: {t_unsorted:.2f} s, {real / t_unsorted:.1f} tokens/s "
          f"(padded/real {unsorted_pad:.2f}); {ceiling.share('torch', f_unsorted, t_unsorted)}")
    print(f"spread of per-pass ratios (ours vs torch same batches): "
          f"{common.spread([a / b for a, b in zip(timed['torch_sorted'][3], timed['ours'][3])])}")
    print(f"unsorted: ours length-sorted vs torch batch {TORCH_BATCH} unsorted: ratio {t_unsorted / t_ours:.2f} "
          f"(of which torch's own sorting gain {t_unsorted / t_sorted:.2f}x)")
    for name, lp in (("same batches", lp_sorted), ("unsorted", lp_unsorted)):
        agree = np.mean(lp_ours.argmax(1) == lp.argmax(1))
        print(f"parity vs torch {name}: predicted letters agree on {agree:.1%} of {len(ids)} prompts, max |log-prob "
              f"diff| {np.abs(lp_ours - lp).max():.1e} ({'OK' if agree == 1.0 else 'CHECK'})")
    common.result("smollm2_mcq_score_mmlu", real / t_ours, real / t_sorted, "tokens/s")


if __name__ == "__main__":
    main()

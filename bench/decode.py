"""SmolLM2-135M zero-shot MMLU letter scoring: ours (JAX) vs transformers (torch), tokens/s.

Workload: N MMLU zero-shot prompts (`zero_shot_prompt`), one forward pass each giving the
next-token log-probabilities of " A" .. " D" at the prompt's last token. Throughput counts
real (non-pad) prompt tokens; tokenization is outside both timings. --sample stride (the
default) takes N questions evenly spaced over the whole test split (55 subjects at N=128,
49-515 tokens); --sample first takes the first N, which in the vendored file are nearly
all moral_scenarios, every prompt 113-153 tokens long (little padding to save there).

Baseline: transformers `LlamaForCausalLM`, torch f32, all cores, batch 16 in sample order,
left-padded to each batch's longest prompt, `logits_to_keep=1` (logits at the last
position only, the same work as ours), RoPE positions that skip the padding (as ours).
Ours: `leeroo_jax.experts.mcq.letter_logprobs` on prompts sorted by length, in batches of
up to 16 rows and 2048 tokens padded to a multiple of 8 (one executable per shape, compiled
in a warm-up call whose time is reported apart; persistent compile cache on).
Timing: per-batch best of --repeats passes, torch and ours interleaved
(common.time_batches). Parity: the predicted letters agree. About 4 minutes on 2 cores.

    .venv/bin/python bench/decode.py [--n 128] [--sample stride|first] [--batch 16]
                                     [--step 8] [--max-tokens 2048] [--repeats 2]
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
    ap.add_argument("--batch", type=int, default=16, help="our batch size (torch's is fixed at 16)")
    ap.add_argument("--step", type=int, default=8, help="our padded lengths are multiples of this")
    ap.add_argument("--max-tokens", type=int, default=2048, help="our rows x length cap per batch")
    ap.add_argument("--repeats", type=int, default=2)
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
    common.print_machine_context()

    questions = load_questions(limit=None if args.sample == "stride" else args.n)
    if args.sample == "stride":
        questions = questions[:: max(1, len(questions) // args.n)][: args.n]
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tok([zero_shot_prompt(q) for q in questions])["input_ids"]  # ragged, unpadded
    lengths = [len(x) for x in ids]
    real = sum(lengths)
    letter_ids = mcq.letter_token_ids(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    print(f"context: {len(ids)} prompts ({args.sample}, {len({q.subject for q in questions})} subjects), "
          f"tokens/prompt mean {real / len(ids):.1f} min {min(lengths)} max {max(lengths)}")

    # ---- baseline: torch, batch 16, sample order, left-padded, last-position logits -----
    tmodel = LlamaForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    tok.padding_side = "left"
    torch_inputs = []
    for s in range(0, len(ids), TORCH_BATCH):
        enc = tok.pad({"input_ids": ids[s:s + TORCH_BATCH]}, return_tensors="pt")
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # positions count real tokens only
        torch_inputs.append((enc["input_ids"], enc["attention_mask"], pos))
    t_letters = torch.as_tensor(letter_ids, dtype=torch.long)

    def torch_call(inp):
        x, m, pos = inp
        logits = tmodel(input_ids=x, attention_mask=m, position_ids=pos, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), -1)[:, t_letters].numpy()

    # ---- ours: bucketed batches through the letter-scoring kernel ----------------------
    model = load(path, tokenizer=False).model
    plan = common.length_buckets(lengths, args.batch, args.step, args.max_tokens)
    ours_inputs = []
    for b, t, rows in plan:
        x = np.full((b, t), pad_id, np.int32)
        m = np.zeros((b, t), np.int32)
        for r, i in enumerate(rows):  # right padding: positions and last token come from the mask
            x[r, :lengths[i]], m[r, :lengths[i]] = ids[i], 1
        m[len(rows):, 0] = 1  # dummy rows filling the last batch: one token each, discarded
        ours_inputs.append((x, m))

    def ours_call(xm):
        return np.asarray(mcq.letter_logprobs(model, *xm, letter_ids))  # blocks until ready

    ours_calls = [lambda xm=xm: ours_call(xm) for xm in ours_inputs]
    shapes = [x.shape for x, _ in ours_inputs]
    warm = common.warm_up(ours_calls, shapes)  # compile each shape once, outside the timing
    torch_call(torch_inputs[0])  # warm torch's thread pool and allocator

    timed = common.time_batches({"torch": [lambda i=i: torch_call(i) for i in torch_inputs],
                                 "ours": ours_calls}, args.repeats)
    t_torch, t_ours = timed["torch"][0], timed["ours"][0]
    lp_torch = np.concatenate(timed["torch"][1])
    lp_ours = np.empty_like(lp_torch)
    for (_, _, rows), out in zip(plan, timed["ours"][1]):
        lp_ours[rows] = out[:len(rows)]

    print(f"ours: compile (or persistent-cache load) {common.compile_seconds(warm, timed['ours'][2]):.1f} s "
          f"for {len(warm)} shapes {sorted(set(shapes))}, excluded from the timing")
    torch_pad = sum(x.numel() for x, _, _ in torch_inputs) / real
    ours_pad = sum(x.size for x, _ in ours_inputs) / real
    print(f"baseline: torch f32 batch {TORCH_BATCH} unsorted: {t_torch:.2f} s, {real / t_torch:.1f} tokens/s "
          f"(padded/real {torch_pad:.2f})")
    print(f"ours: jax f32 batch <={args.batch} bucketed: {t_ours:.2f} s, {real / t_ours:.1f} tokens/s "
          f"(padded/real {ours_pad:.2f})")
    agree = np.mean(lp_ours.argmax(1) == lp_torch.argmax(1))
    print(f"parity: predicted letters agree on {agree:.1%} of {len(ids)} prompts, max |log-prob diff| "
          f"{np.abs(lp_ours - lp_torch).max():.1e} ({'OK' if agree == 1.0 else 'CHECK'})")
    common.result("smollm2_mcq_score_mmlu", real / t_ours, real / t_torch, "tokens/s")


if __name__ == "__main__":
    main()

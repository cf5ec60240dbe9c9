"""`make run` until the orchestrator lands: the real backbones on real MMLU questions.

    python -m leeroo_jax.demo --n=64

1. MiniLM (BERT) embeds N questions; we report how often a question's nearest neighbour
   is from the same subject (the signal a kNN router lives on).
2. SmolLM2-135M-Instruct scores the same questions zero-shot by answer-letter
   log-likelihood; we report accuracy and how often it picks each letter.
3. SmolLM2 answers a chat prompt through KV-cache generation.
"""

from __future__ import annotations

import collections
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from leeroo_jax import compile_cache
from leeroo_jax.data.buckets import bucket_length
from leeroo_jax.data.mmlu import LETTERS, load_questions, zero_shot_prompt
from leeroo_jax.errors import run_main
from leeroo_jax.experts import generate, mcq
from leeroo_jax.models import layers
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load

_N = flags.DEFINE_integer("n", 64, "number of MMLU questions")
_BATCH = flags.DEFINE_integer("batch", 16, "batch size")


def _batches(texts, tokenizer, batch, padding_side):
    tokenizer.padding_side = padding_side
    for i in range(0, len(texts), batch):
        chunk = texts[i:i + batch]
        enc = tokenizer(chunk, return_tensors="np", padding=True, truncation=True, max_length=512)
        t = bucket_length(enc["input_ids"].shape[1], step=64, max_length=512)  # a few compiled shapes
        enc = tokenizer(chunk, return_tensors="np", padding="max_length", truncation=True, max_length=t)
        yield enc["input_ids"], enc["attention_mask"]


def run() -> None:
    compile_cache.enable()
    everything = load_questions()
    questions = everything[:: max(1, len(everything) // _N.value)][: _N.value]  # spread over subjects
    subjects = np.array([q.subject for q in questions])

    t0 = time.perf_counter()
    enc = load(assets.minilm_dir())
    vecs = []
    for ids, mask in _batches([q.question for q in questions], enc.tokenizer, _BATCH.value, "right"):
        out = enc.model(jnp.asarray(ids), jnp.asarray(mask))
        vecs.append(np.asarray(layers.l2_normalize(layers.mean_pool(out.hidden, jnp.asarray(mask)))))
    vecs = np.concatenate(vecs)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    same = float(np.mean(subjects[sims.argmax(1)] == subjects))
    n_subj = len(set(subjects))
    print(f"MiniLM: {len(questions)} questions embedded in {time.perf_counter() - t0:.1f}s; nearest neighbour "
          f"shares the subject {same:.1%} of the time ({n_subj} subjects)")

    t0 = time.perf_counter()
    dec = load(assets.smollm2_dir())
    letters = mcq.letter_token_ids(dec.tokenizer, LETTERS[:4])  # MMLU: four options
    picks = []
    for ids, mask in _batches([zero_shot_prompt(q) for q in questions], dec.tokenizer, _BATCH.value, "left"):
        picks.append(np.asarray(mcq.letter_logprobs(dec.model, ids, mask, letters)).argmax(1))
    picks = np.concatenate(picks)
    acc = float(np.mean(picks == np.array([q.answer for q in questions])))
    counts = collections.Counter(LETTERS[i] for i in picks)
    print(f"SmolLM2-135M zero-shot MMLU: accuracy {acc:.1%} on {len(questions)} questions "
          f"(chance 25%; letters picked {dict(sorted(counts.items()))}) in {time.perf_counter() - t0:.1f}s")

    reply = generate.chat_generate(dec.model, dec.tokenizer, ["What is the capital of France?"], 24)[0]
    print(f"SmolLM2 chat: 'What is the capital of France?' -> {reply!r}")


def main(argv) -> None:
    del argv
    run_main(run)


if __name__ == "__main__":
    app.run(main)

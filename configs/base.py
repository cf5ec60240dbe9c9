"""Defaults shared by every config. `get_config()` returns an ml_collections ConfigDict;
entry points load it with `--config=configs/<file>.py[:variant]` and lock it, so an override
of a key that does not exist (`--config.trian.lr=...`) is an error, not a silent no-op."""

import ml_collections

from configs.pools import MMLU_9


def get_config():
    c = ml_collections.ConfigDict()
    c.run_name = "mmlu"
    c.output_root = "checkpoints"  # outputs go to <output_root>/<run_name>/
    c.job = "baselines"  # score.py jobs: baselines

    c.data = ml_collections.ConfigDict()
    c.data.source = "vendored"  # "vendored", a .jsonl(.gz) file, a Berkeley CSV dir, or "cais/mmlu"
    c.data.outcomes = "vendored"  # graded outcomes CSV; "vendored" = leeroo_jax/data/assets/outcomes.csv.gz

    c.pool = [dict(e) for e in MMLU_9]

    c.backbone = ml_collections.ConfigDict()
    c.backbone.path = "minilm"  # "minilm", "smollm2" (the fetched real weights), an HF dir or a hub id
    c.backbone.pooling = "mean"  # mean | cls | last
    c.backbone.max_length = 256
    c.backbone.batch_size = 64

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "test"  # test | val
    c.eval.weak = "mistralai/Mixtral-8x7B-Instruct-v0.1"  # APGR/CPT pair and the "at cost of" expert
    c.eval.strong = "gpt-4-1106-preview"  # and the "cost to reach the accuracy of" expert
    c.eval.knn_ks = (20, 100)
    c.eval.subject_strength = 20.0
    return c

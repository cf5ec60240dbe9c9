"""A TPU v5e-64 slice: the Llama-3-8B orchestrator fine-tuned in full, and four experts from
7B to 70B served on the same slice. For the planner only (no weights are read):

    python -m leeroo_jax.plan --config=configs/plan_v5e64.py [--config.mesh.fsdp=16 --config.mesh.data=1 ...]

64 chips of 16 GiB HBM and 197 TFLOP/s dense bf16 each (cloud.google.com/tpu/docs/v5e). The
mesh uses all three axes: batch over data x fsdp = 16, weights over fsdp = 8 (embed dims)
and tensor = 4 (heads, MLP, vocab). The model directories hold the official config.json
files (configs/hf/README.md).
"""

import pathlib

import ml_collections

from configs import base

HF = pathlib.Path(__file__).resolve().parent / "hf"

# Prices are placeholders the planner does not read (a pool entry needs them).
EXPERTS = (
    dict(name="mistralai/Mistral-7B-v0.1", checkpoint="Mistral-7B-v0.1", input_price=0.20, output_price=0.20),
    dict(name="meta-llama/Meta-Llama-3-8B", checkpoint="Meta-Llama-3-8B", input_price=0.20, output_price=0.20),
    dict(name="meta-llama/Llama-2-13b-hf", checkpoint="Llama-2-13b-hf", input_price=0.30, output_price=0.30),
    dict(name="meta-llama/Meta-Llama-3-70B", checkpoint="Meta-Llama-3-70B", input_price=0.90, output_price=0.90),
)


def get_config():
    c = base.get_config()
    c.run_name = "plan_v5e64"
    c.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=8, tensor=4))

    c.backbone.path = str(HF / "Meta-Llama-3-8B")
    c.backbone.pooling = "last"  # a decoder's summary of the query is its last token
    c.backbone.max_length = 256  # MMLU questions with their options fit in 256 tokens
    c.train.mode = "full"  # every backbone weight learns (train.py: trainer.py "full")
    c.train.batch_size = 64  # 4 rows per data-parallel device: what fits 16 GiB in float32 (see the plan)

    # Experts at serving: bf16 weights and KV cache, chat recipe (generation with the KV cache).
    c.pool = [dict(e, checkpoint=str(HF / e["checkpoint"]), backend="flax", recipe="chat", dtype="bfloat16")
              for e in EXPERTS]
    c.eval.weak, c.eval.strong = EXPERTS[0]["name"], EXPERTS[-1]["name"]
    c.experts.batch_size = 16

    c.plan.update(
        chip="v5e",
        devices=64,
        mfu=0.4,  # an assumption, printed beside the step-time estimate it sets
        kv_batch=16,  # rows per expert batch (config.experts.batch_size)
        kv_len=4096,  # prompt + generated tokens per row
    )
    return c

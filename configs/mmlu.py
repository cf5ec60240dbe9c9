"""The default config: route MMLU questions over the 9-expert pool of real graded answers.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=baselines
    python -m leeroo_jax.score --config=configs/mmlu.py:live --config.job=experts   # SmolLM2 answers
"""

from configs import base
from configs.pools import GPT4, MIXTRAL, MMLU_9, OPEN_7, SMOLLM2_LIVE, repriced


HOLDOUT = "HuggingFaceH4/zephyr-7b-beta"


def get_config(variant: str | None = None):
    c = base.get_config()
    if variant in (None, ""):
        return c
    if variant == "finetune":  # MiniLM's top 2 layers learn under the default run's head (run `make run` first)
        c.run_name = "mmlu_finetune"
        c.train.mode = "last_k"
        c.train.last_k = 2
        c.train.init_head_from = "checkpoints/mmlu"  # a fresh head on a moving backbone starts from noise
        c.train.batch_size = 64  # length-grouped batches of 64: ~4 s a step on 2 CPU cores
        c.train.steps = 200
        c.train.lr = 3e-4
        c.train.backbone_lr_scale = 0.3  # backbone lr 9e-5
        c.train.eval_every = 25
        c.train.log_every = 10
        return c
    if variant == "holdout":  # the pool without one 7B expert, for add_expert experiments
        c.run_name = "mmlu_holdout"
        return base.drop_expert(c, HOLDOUT)
    if variant == "live":  # the 9 recorded experts + SmolLM2 zero- and 5-shot, run here (score --config.job=experts)
        c.run_name = "mmlu_live"
        c.pool = [dict(e) for e in MMLU_9 + SMOLLM2_LIVE]
        return c
    if variant == "selfplay":  # the honest bandit benchmark on the real outcomes (jobs/selfplay.py)
        c.run_name = "mmlu_selfplay"
        c.train.dropout, c.train.weight_decay = 0.3, 0.1  # the MC-dropout posterior the benchmark was measured with
        return c
    # Other pools over the same graded answers (README "Routing on other pools"): the CSV's
    # other experts are skipped, not errors.
    if variant == "pair":  # RouteLLM's setting: GPT-4 vs Mixtral, both graded on all 13,937 questions
        c.run_name = "mmlu_pair"
        c.pool = [dict(e) for e in MMLU_9 if e["name"] in (GPT4, MIXTRAL)]
        c.data.extra_experts = "skip"
        return c
    if variant == "open7":  # the seven open 7-8B models alone: equal prices, so routing is for accuracy only
        c.run_name = "mmlu_open7"
        c.pool = [dict(e) for e in OPEN_7]
        c.data.extra_experts = "skip"
        c.eval.weak, c.eval.strong = "mistralai/Mistral-7B-v0.1", "meta-llama/Meta-Llama-3-8B"
        return c
    if variant == "gpt4_tenth":  # the 9 experts, GPT-4 at a tenth of its list price
        c.run_name = "mmlu_gpt4_tenth"
        c.pool = list(repriced(MMLU_9, GPT4, 0.1))
        return c
    raise ValueError(f"configs/mmlu.py has no variant {variant!r}; choose finetune, holdout, live, selfplay, pair, "
                     "open7 or gpt4_tenth")

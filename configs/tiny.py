"""A seconds-long CPU smoke config for tests: few steps, small head, no kNN reference
routers (they need the backbone), outputs under checkpoints/tiny."""

from configs import base
from configs.mmlu import HOLDOUT
from configs.pools import MMLU_9, SMOLLM2_LIVE


def get_config(variant: str | None = None):
    c = base.get_config()
    if variant == "holdout":  # without one 7B expert, for the add_expert test
        base.drop_expert(c, HOLDOUT)
    elif variant == "live":  # + SmolLM2 zero- and 5-shot, scored here (score --config.job=experts)
        c.pool = [dict(e) for e in MMLU_9 + SMOLLM2_LIVE]
    elif variant in ("selfplay", "selfplay_live"):  # two short rounds
        c.selfplay.rounds = 2
        c.train.dropout, c.train.weight_decay = 0.3, 0.1  # as configs/mmlu.py:selfplay
        c.selfplay.steps = 10
        c.selfplay.start_fraction = 0.2
        c.selfplay.calls_per_round = 0.1
        c.selfplay.usd_per_round = 10.0  # the call budget binds, not the dollars: equal calls in the bandit test
        if variant == "selfplay_live":  # SmolLM2 writes questions and answers them beside the recorded experts
            c.pool = [dict(e) for e in MMLU_9] + [dict(SMOLLM2_LIVE[0])]
            c.selfplay.source = "generator"
            c.selfplay.generator = SMOLLM2_LIVE[0]["name"]
            c.selfplay.generate_subjects = ("high_school_geography", "astronomy")
            c.selfplay.generate_per_subject = 4
            c.selfplay.generate_tokens = 80
    elif variant not in (None, ""):
        raise ValueError(f"configs/tiny.py has no variant {variant!r}")
    c.run_name = "tiny" if not variant else f"tiny_{variant}"
    return shrink(c)


def shrink(c):
    """Any config made seconds-long on CPU (the tests' other pools use it on configs/mmlu.py's)."""
    c.train.steps = 20
    c.train.batch_size = 64
    c.train.hidden = 16
    c.train.warmup_steps = 5
    c.train.log_every = 5
    c.train.eval_every = 10
    c.eval.knn_ks = ()
    c.eval.policy_folds = 0  # the policy decides on VAL alone (tests/training/test_deployment.py turns folds on)
    c.backbone.max_length = 16  # a cold cache embeds 13,937 texts: keep that seconds, not minutes
    return c

"""A seconds-long CPU smoke config for tests: few steps, small head, no kNN reference
routers (they need the backbone), outputs under checkpoints/tiny."""

from configs import base


def get_config(variant: str | None = None):
    c = base.get_config()
    c.run_name = "tiny"
    c.train.steps = 20
    c.train.batch_size = 64
    c.train.hidden = 16
    c.train.warmup_steps = 5
    c.train.log_every = 5
    c.train.eval_every = 10
    c.eval.knn_ks = ()
    c.backbone.max_length = 16  # a cold cache embeds 13,937 texts: keep that seconds, not minutes
    return c

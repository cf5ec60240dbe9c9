"""The default config: route MMLU questions over the 9-expert pool of real graded answers.

    python -m leeroo_jax.score --config=configs/mmlu.py --config.job=baselines
"""

from configs import base


def get_config(variant: str | None = None):
    c = base.get_config()
    if variant not in (None, ""):
        raise ValueError(f"configs/mmlu.py has no variant {variant!r}")
    return c

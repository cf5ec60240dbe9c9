"""leeroo_jax: a JAX/Flax stack for a cost-aware LLM orchestrator."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from leeroo_jax import Orchestrator` (serving/api.py), imported on first use: the
    package itself stays light for the entry points that never serve."""
    if name == "Orchestrator":
        from leeroo_jax.serving.api import Orchestrator

        return Orchestrator
    raise AttributeError(f"module 'leeroo_jax' has no attribute {name!r}")

"""leeroo_jax: a JAX/Flax stack for a cost-aware LLM orchestrator."""

__version__ = "0.1.0"

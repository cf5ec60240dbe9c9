"""leeroo_jax.orchestrator."""

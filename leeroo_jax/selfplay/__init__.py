"""leeroo_jax.selfplay."""

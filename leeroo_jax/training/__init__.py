"""leeroo_jax.training."""

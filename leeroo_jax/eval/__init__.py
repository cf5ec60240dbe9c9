"""leeroo_jax.eval."""

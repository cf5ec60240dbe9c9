"""leeroo_jax.weights."""

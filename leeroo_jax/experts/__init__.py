"""leeroo_jax.experts."""

"""leeroo_jax.data."""

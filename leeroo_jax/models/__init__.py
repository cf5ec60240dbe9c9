"""leeroo_jax.models."""

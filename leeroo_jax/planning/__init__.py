"""The memory and time planner (entry point: leeroo_jax/plan.py)."""

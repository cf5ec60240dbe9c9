"""The OpenAI-compatible server: route each request under the budget its model string names,
and answer it with the chosen expert (serving/app.py).

    python -m leeroo_jax.serve --checkpoint=checkpoints/mmlu --port=8000 [--endpoints=endpoints.json]
    python -m leeroo_jax.serve --expert=smollm2 --port=8001     # one live model, as an endpoint
"""

from leeroo_jax import compile_cache
from leeroo_jax.errors import run_main
from leeroo_jax.serving import server

if __name__ == "__main__":
    compile_cache.enable()
    run_main(server.main)

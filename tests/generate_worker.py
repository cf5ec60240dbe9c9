"""Worker for test_multiprocess_jobs.py: one of N processes generating greedily with SmolLM2 on
the global mesh; process 0 writes every row's tokens as JSON.

    launch/local_multiprocess.sh 2 python tests/generate_worker.py WEIGHTS_DIR OUT.json PROMPT...
"""

import json
import sys

from leeroo_jax import distributed

distributed.initialize()
import jax  # noqa: E402

from leeroo_jax import compile_cache, sharding  # noqa: E402
from leeroo_jax.experts import generate  # noqa: E402
from leeroo_jax.weights.loader import load  # noqa: E402

compile_cache.enable()
path, out, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
mesh = sharding.make_mesh(sharding.MeshConfig(data=-1))
lm = load(path, mesh)
ids = [lm.tokenizer(p)["input_ids"] for p in prompts]
with jax.set_mesh(mesh):
    tokens = generate.greedy_generate(lm.model, ids, 12, [lm.tokenizer.eos_token_id], mesh)
if distributed.is_main_process():
    with open(out, "w") as f:
        json.dump(tokens, f)

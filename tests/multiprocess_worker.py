"""Worker for test_distributed.py: one of N processes forming a global batch over localhost."""

import sys

import numpy as np
from leeroo_jax import distributed
distributed.initialize()
import jax
from leeroo_jax import sharding
mesh = sharding.make_mesh(sharding.MeshConfig(data=-1))
local = np.full((4, 2), jax.process_index(), np.float32)
g = sharding.shard_batch(local, mesh)
total = jax.jit(lambda x: x.sum())(g)
# one write per line: with unbuffered stdout, print's separate "\n" write interleaves between processes
sys.stdout.write(f"process {jax.process_index()}/{jax.process_count()} devices={jax.device_count()} "
                 f"global_shape={g.shape} sum={float(total)}\n")
sys.stdout.flush()

"""Worker for test_distributed.py: one of N processes forming a global batch over localhost."""

import numpy as np
from leeroo_jax import distributed
distributed.initialize()
import jax
from leeroo_jax import sharding
mesh = sharding.make_mesh(sharding.MeshConfig(data=-1))
local = np.full((4, 2), jax.process_index(), np.float32)
g = sharding.shard_batch(local, mesh)
total = jax.jit(lambda x: x.sum())(g)
print(f"process {jax.process_index()}/{jax.process_count()} devices={jax.device_count()} global_shape={g.shape} sum={float(total)}")

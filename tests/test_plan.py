"""The planner (issue 11, section 5) against numbers it does not compute itself.

  - parameter counts: the real loaded MiniLM; NumPy formulas over config.json; the published
    totals of the shipped 7B-70B configs
  - per-device bytes: the shards the loader really places on a 2x2x2 mesh
  - the memory estimate: memory_analysis() of the real train step, compiled here from real
    arrays built the trainer's way (not from the planner's abstract state), within 10%
  - FLOPs: XLA's cost_analysis() of a one-layer model (one scan iteration: a whole count)
  - bad input: one-line ConfigErrors (the CLI prints a LeerooError as one `error:` line and
    exits 2: config.absl_run, tested in test_cli_errors.py); the CLI prints the v5e-64 table
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from leeroo_jax import sharding
from leeroo_jax.errors import ConfigError
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.orchestrator.model import Head, HeadConfig, Orchestrator
from leeroo_jax.planning import planner, shapes
from leeroo_jax.training import optim, step
from leeroo_jax.weights.loader import load

ROOT = pathlib.Path(__file__).resolve().parents[1]
HF = ROOT / "configs" / "hf"
E, P, HIDDEN = 9, 3, 16  # configs/tiny.py: the 9-expert pool, side_knn (20, 100) + prior, hidden 16

# Published parameter totals (the safetensors "total" of each official repository).
PUBLISHED = {"Meta-Llama-3-8B": 8_030_261_248, "Meta-Llama-3-70B": 70_553_706_496,
             "Mistral-7B-v0.1": 7_241_732_096, "Llama-2-13b-hf": 13_015_864_320}


def _config(path, batch: int, seq: int, mesh=(2, 2, 2), mode: str = "full", **plan):
    c = tiny.get_config()
    c.backbone.path = str(path)
    c.backbone.max_length = seq
    c.train.mode, c.train.batch_size = mode, batch
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    c.plan = ml_collections.ConfigDict({"compile": False, **plan})
    return c


def _llama_params(c: dict) -> int:
    """Llama/Mistral parameter count from config.json, written out independently."""
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H, K = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    d = c.get("head_dim") or D // H
    per_layer = D * H * d + 2 * D * K * d + H * d * D + 3 * D * F + 2 * D
    return V * D * (1 if c.get("tie_word_embeddings") else 2) + L * per_layer + D


def _real_step(loaded, batch: int, seq: int, mesh):
    """The real train step on real weights, built as Trainer builds it, compiled for `mesh`:
    (memory_analysis, bytes of device 0's parameter shards)."""
    head = Head(HeadConfig(loaded.config.hidden_size, E, P, HIDDEN, 0.5), rngs=nnx.Rngs(0))
    model = Orchestrator(head, loaded.model, "mean")
    opt = nnx.Optimizer(model, optim.make(optim.OptimConfig(num_layers=loaded.config.num_layers)), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    state = jax.device_put(state, sharding.state_shardings(state, mesh))
    dev0 = mesh.devices.flat[0]
    param_bytes = sum(s.data.nbytes for x in jax.tree.leaves(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
                      for s in x.addressable_shards if s.device == dev0)
    rng = np.random.default_rng(0)
    host = {"tokens": rng.integers(0, loaded.config.vocab_size, (batch, seq)).astype(np.int32),
            "attn": np.ones((batch, seq), np.int32), "side": rng.uniform(0.1, 0.9, (batch, E, P)).astype(np.float32),
            "target": rng.uniform(size=(batch, E)).astype(np.float32), "mask": np.ones((batch, E), np.float32)}
    with jax.set_mesh(mesh):
        compiled = step.train_step.lower(graphdef, state, sharding.shard_batch(host, mesh), jax.random.key(0)).compile()
    return compiled.memory_analysis(), param_bytes


# (batch, length, mesh): activations a large share of the step (the estimate's hard part); MiniLM
# on all three axes, SmolLM2 (whose 9 and 3 heads a tensor axis of 2 cannot split) on data x fsdp.
CASES = {"minilm": (32, 128, (2, 2, 2)), "smollm2": (32, 128, (4, 2, 1))}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, minilm_path, smollm2_path, devices):
    path = {"minilm": minilm_path, "smollm2": smollm2_path}[request.param]
    batch, seq, shape = CASES[request.param]
    mesh = sharding.make_mesh(sharding.MeshConfig(*shape), devices=devices)
    plan = planner.make_plan(_config(path, batch, seq, mesh=shape), devices=devices)
    loaded = load(path, mesh, tokenizer=False)
    mem, param_bytes = _real_step(loaded, batch, seq, mesh)
    return request.param, plan, loaded, mem, param_bytes


def test_parameters_equal_the_real_loaded_model(case):
    name, plan, loaded, _, param_bytes = case
    real = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(loaded.model, nnx.Param)))
    assert plan.backbone_params == real
    if name == "smollm2":  # and the formula, from config.json alone
        assert real == _llama_params(json.loads((loaded.path / "config.json").read_text())) == 134_515_008
    assert plan.memory.params == param_bytes  # per device: the shards the loader placed on device 0


def test_memory_estimate_matches_the_compiled_train_step(case):
    name, plan, _, mem, _ = case
    m = plan.memory
    # The arguments are the state and the batch, exactly (+ the 8-byte RNG key).
    assert abs(mem.argument_size_in_bytes - (m.params + m.opt_state + m.batch)) <= 64
    compiled_peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    assert m.activations > 0.5 * (m.params + m.opt_state), "activations must matter in this case"
    assert m.peak == pytest.approx(compiled_peak, rel=0.10), (name, m, mem)


def test_published_totals_of_the_shipped_configs():
    for name, total in PUBLISHED.items():
        cfg = shapes.model_config(str(HF / name), "test")
        abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
        assert shapes.count(nnx.state(abstract, nnx.Param)) == total == _llama_params(
            json.loads((HF / name / "config.json").read_text())), name


def test_analytic_flops_match_xla_on_one_layer(tmp_path, smollm2_path, devices):
    """One layer: lax.scan runs its body once, so cost_analysis() counts the whole step."""
    hf_cfg = json.loads((smollm2_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf_cfg, "num_hidden_layers": 1}))
    plan = planner.make_plan(_config(tmp_path, 8, 128, mesh=(1, 1, 1), compile=True), devices=devices[:1])
    assert plan.compiled is not None and plan.compiled.cost_flops
    assert plan.flops.total == pytest.approx(plan.compiled.cost_flops, rel=0.10)


def test_bad_mesh_and_missing_config_are_one_line_errors(devices, minilm_path, tmp_path):
    with pytest.raises(ConfigError) as e:  # 3 x 2 x 2 = 12 devices for a plan of 8
        planner.make_plan(_config(minilm_path, 24, 16, mesh=(3, 2, 2), devices=8), devices=devices)
    assert "\n" not in str(e.value) and "mesh" in str(e.value)
    with pytest.raises(ConfigError) as e:  # batch 10 over data x fsdp = 4
        planner.make_plan(_config(minilm_path, 10, 16), devices=devices)
    assert "\n" not in str(e.value) and "batch_size=10" in str(e.value)
    with pytest.raises(ConfigError) as e:
        planner.make_plan(_config(tmp_path, 8, 16), devices=devices)
    assert "\n" not in str(e.value) and "config.json" in str(e.value)


def test_cli_prints_the_v5e64_table():
    proc = subprocess.run([sys.executable, "-m", "leeroo_jax.plan", "--config=configs/plan_v5e64.py"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "64 x TPU v5e (16 GiB HBM, 197 TFLOP/s" in out and "mesh data=2 fsdp=8 tensor=4" in out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line.startswith("  ") and "  " in line[2:]}

    def gib(row):  # the first number after the row's name
        return float(rows[row].split()[len(row.split())])

    # 8.03B float32 parameters over fsdp x tensor = 32 shards (the 0.3M-parameter head adds < 1 MiB)
    assert gib("parameters") == pytest.approx(PUBLISHED["Meta-Llama-3-8B"] * 4 / 32 / 2**30, abs=2e-3)
    assert gib("optimizer state (AdamW)") == pytest.approx(2 * gib("parameters"), abs=2e-3)
    assert "step time estimate" in out and "at 40% MFU of 64 x 197 TFLOP/s" in out
    assert 0.9 <= gib("estimate / compiled") <= 1.1  # the 8B step compiled for 64 (fake CPU) devices
    seventy = next(line for line in out.splitlines() if "Meta-Llama-3-70B" in line).split()
    # bf16 70B weights over 32 shards; KV: 80 x 16 rows x 4096 slots x 8 KV heads x 128 x 2 B x 2 = 20 GiB in all
    assert float(seventy[3]) == pytest.approx(PUBLISHED["Meta-Llama-3-70B"] * 2 / 32 / 2**30, abs=5e-3)
    assert float(seventy[6]) == pytest.approx(80 * 16 * 4096 * 8 * 128 * 2 * 2 / 2**30, abs=0.01)
    assert float(seventy[4]) == pytest.approx(20.0 / 64, abs=2e-3)  # 1 row and 2 of the 8 KV heads per device

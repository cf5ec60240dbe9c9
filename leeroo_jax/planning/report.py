"""The plan as a plain-text table: each figure per device, and where it comes from."""

from __future__ import annotations

from leeroo_jax.planning.planner import Plan

GIB = 2**30


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _fits(n: int, hbm_gib: float) -> str:
    share = n / (hbm_gib * GIB)
    return f"fits ({share:.0%} of HBM)" if share <= 1 else f"DOES NOT FIT ({share:.1f}x HBM)"


def _header(plan: Plan, config_name: str) -> list[str]:
    s, ts, mc = plan.spec, plan.shapes, plan.shapes.model_cfg
    mesh = " ".join(f"{k}={v}" for k, v in plan.mesh_shape.items())
    lines = [f"plan {config_name}".rstrip(),
             f"target: {s.devices} x {s.chip.name} ({s.chip.hbm_gib:g} GiB HBM, {s.chip.peak_tflops:g} TFLOP/s dense "
             f"bf16 peak each); mesh {mesh}"]
    if ts.backbone_in_step:
        lines.append(f"orchestrator: {mc.model_type} backbone {_count(plan.backbone_params)} + head "
                     f"{_count(plan.head_params)} parameters; mode {ts.mode} ({ts.trainable_layers}/{mc.num_layers} "
                     f"layers learn); batch {ts.batch_size} x {ts.seq_len} tokens; params {s.param_dtype}, compute "
                     f"{s.compute_dtype}")
    else:
        lines.append(f"orchestrator: head {_count(plan.head_params)} parameters on cached {mc.hidden_size}-d embeddings "
                     f"(mode frozen: the backbone is not in the step); batch {ts.batch_size}")
    return lines


def _train_rows(plan: Plan) -> list[str]:
    s, m, c = plan.spec, plan.memory, plan.compiled
    unit, scale = ("GiB", GIB) if m.peak >= GIB else ("MiB", 2**20)  # MiB when the whole step is under 1 GiB

    def v(n: float) -> str:
        return f"{n / scale:9.3f}"

    lines = [
        f"train step, per device                  {unit}  source",
        f"  parameters                      {v(m.params)}  eval_shape, shard shapes under LOGICAL_AXIS_RULES (exact)",
        f"  optimizer state (AdamW)         {v(m.opt_state)}  eval_shape of nnx.Optimizer, sharded like the params (exact)",
        f"  batch                           {v(m.batch)}  split over data x fsdp (exact)",
        f"  gradients                       {v(m.grads)}  one per parameter shard (exact shapes)",
        f"  activations                     {v(m.activations)}  vjp residuals traced at per-device shapes "
        f"({m.saved / scale:.3f}) + one layer's share (estimate)",
        f"  optimizer update transient      {v(m.update)}  one buffer of the learning parameters (estimate)",
        f"  peak estimate                   {v(m.peak)}  params+opt+batch+grads+max(activations, update): "
        f"{_fits(m.peak, s.chip.hbm_gib)}",
    ]
    if c is None:
        return lines + [f"  compiled peak                         -  not compiled: {plan.compile_note}"]
    unaliased = c.output_bytes - c.alias_bytes
    return lines + [
        f"  compiled peak                   {v(c.peak_bytes)}  memory_analysis() of step.train_step (XLA:"
        f"{c.platform.upper()}, {s.devices} devices): {c.argument_bytes / scale:.3f} arguments + "
        f"{c.temp_bytes / scale:.3f} temp" + (f" + {unaliased / scale:.3f} unaliased outputs" if unaliased > 2**20 else ""),
        f"  estimate / compiled             {m.peak / c.peak_bytes:9.3f}"
        + ("  (CPU compiler: the target's fusion and buffer reuse differ)" if c.platform == "cpu" else ""),
    ]


def _compute_rows(plan: Plan) -> list[str]:
    s, f, c, ts = plan.spec, plan.flops, plan.compiled, plan.shapes
    lines = ["compute"]
    if f.tokens:
        lines.append(f"  FLOPs per step                  {f.total:.3e}  analytic: 6 N tokens + attention (N = "
                     f"{_count(f.matmul_weights)} matmul weights, {f.tokens:,} tokens; frozen layers forward only)")
    else:
        lines.append(f"  FLOPs per step                  {f.total:.3e}  analytic: the head's matmuls, forward + backward")
    if c is not None and c.cost_flops is not None:
        caveat = (f"counts the scanned layer body once, not x {ts.model_cfg.num_layers}: not a step total"
                  if ts.backbone_in_step else "one device's program (no scanned layers in this step)")
        lines.append(f"  XLA cost_analysis, one device   {c.cost_flops:.3e}  {caveat}")
    rate = f"  ({f.tokens / plan.step_seconds:,.0f} tokens/s)" if f.tokens else ""
    lines.append(f"  step time estimate              {plan.step_seconds * 1e3:9.3g} ms at {s.mfu:.0%} MFU of "
                 f"{s.devices} x {s.chip.peak_tflops:g} TFLOP/s{rate}")
    return lines


def _expert_rows(plan: Plan) -> list[str]:
    if not plan.experts:
        return ["experts at serving: none (no live expert, backend='flax', in config.pool; recorded experts run nowhere)"]
    e0, hbm = plan.experts[0], plan.spec.chip.hbm_gib
    lines = [f"experts at serving, per device: KV cache of {e0.rows} rows x {e0.slots} slots (config.plan.kv_batch "
             "padded to data x fsdp, kv_len), same mesh",
             f"  {'expert':<34} {'params':>7} {'dtype':>9} {'weights':>9} {'KV cache':>9} {'total':>9}  {'KV all devs':>11}"]
    for e in plan.experts:
        total = e.weight_bytes + e.kv_bytes
        lines.append(f"  {e.name[:34]:<34} {_count(e.params):>7} {e.dtype:>9} {e.weight_bytes / GIB:9.3f} "
                     f"{e.kv_bytes / GIB:9.3f} {total / GIB:9.3f}  {e.kv_total_bytes / GIB:11.2f}  {_fits(total, hbm)}")
    lines.append("  (GiB; weights from eval_shape shard shapes, KV = 2 x [L, B, S, K, d] + valid [B, S] under the rules; "
                 "activations of the forward pass not included)")
    return lines


def render(plan: Plan, config_name: str = "") -> str:
    return "\n".join(_header(plan, config_name) + [""] + _train_rows(plan) + [""] + _compute_rows(plan) + [""]
                     + _expert_rows(plan))

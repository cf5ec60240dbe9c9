"""Orbax checkpoints of the training state (the only module that imports orbax).

A checkpoint is a Composite of the nnx state of (model, optimizer) and a small JSON of loop
metadata (step, seeds, config digest). Saves are asynchronous; the manager keeps the last
`keep` checkpoints plus the best one by the VAL metric. Restoring goes into the abstract,
sharded state, so every array comes back on the sharding the live state would have.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from leeroo_jax import fileio
from leeroo_jax.errors import ConfigError

BEST_METRIC = "val_aiq"

# The config fields that define what a checkpoint's state *is*: resuming under other values
# would load weights of another shape or meaning (another pool, head, backbone, mode or seed).
# Schedules (steps, lr, eval cadence) may change between resumes; these may not.
IDENTITY_FIELDS = ("backbone.path", "backbone.pooling", "backbone.max_length", "train.mode", "train.last_k",
                   "train.hidden", "train.side_knn", "train.side_prior", "train.seed", "train.batch_size",
                   "eval.subject_strength")


def identity(cfg) -> dict:
    """{"pool": [names], field: value for IDENTITY_FIELDS, "digest": sha256 of the rest}."""
    out: dict[str, Any] = {"pool": [e["name"] for e in cfg.pool]}
    for field in IDENTITY_FIELDS:
        group, key = field.split(".")
        v = cfg[group][key]
        out[field] = list(v) if isinstance(v, (tuple, list)) else v
    for field in ("anchor", "ensemble"):  # only when set, so runs saved before the fields keep their identity
        if cfg.train.get(field, "") not in ("", 1):
            out[f"train.{field}"] = cfg.train[field]
    out["digest"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
    return out


def check_identity(meta: dict, cfg, where) -> None:
    """One-line ConfigError naming the first field where `cfg` differs from the checkpoint's."""
    saved = meta.get("config")
    if not saved:
        return  # written before checkpoints carried their config
    mine = identity(cfg)
    if saved.get("digest") == mine["digest"]:
        return
    for field in ("pool", *IDENTITY_FIELDS, "train.anchor", "train.ensemble"):
        if saved.get(field) != mine.get(field):
            name = "config.pool (expert names)" if field == "pool" else f"config.{field}"
            raise ConfigError(f"{where} was trained with {name}={saved.get(field)!r} but this config has {mine[field]!r}; "
                              "resume with the run's own config, or start a new run (--config.run_name=...)")


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 2, async_save: bool = True):
        """directory: local, or a bucket URI (gs://...: orbax writes it through epath and tensorstore)."""
        policy = policies.AnyPreservationPolicy(policies=[
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1),  # ascending sort, keeps the last: the max
        ])
        try:
            self.mgr = ocp.CheckpointManager(
                fileio.resolved(directory),
                options=ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=async_save,
                                                     best_fn=lambda m: m[BEST_METRIC], best_mode="max"),
            )
        except ImportError as e:  # in a bucket orbax imports google-cloud-storage, epath gcsfs: optional clients
            if fileio.is_local(directory):
                raise
            raise ConfigError(f"cannot open the checkpoints in {directory} ({fileio.reason(e)}); "
                              f"{fileio.client_fix(e)}") from None

    @property
    def directory(self) -> epath.Path:
        return epath.Path(self.mgr.directory)

    def latest_step(self) -> int | None:
        return self.mgr.latest_step()

    def best_step(self) -> int | None:
        return self.mgr.best_step()

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        self.mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                      metrics=metrics)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """(state, meta); abstract_state: jax.ShapeDtypeStruct leaves carrying their shardings."""
        out = self.mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                              meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def meta(self, step: int) -> dict:
        """The loop metadata of a checkpoint (step, seed, config identity), without its arrays."""
        return self.mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore_as_saved(self, step: int) -> tuple[Any, dict]:
        """(state, meta) of a checkpoint whose structure the caller does not have (another run's):
        the target is read from the checkpoint's own metadata; arrays land on the default device."""
        meta = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree,
                                is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
        return self.restore(step, abstract)

    def wait(self) -> None:
        self.mgr.wait_until_finished()

    def close(self) -> None:
        self.mgr.wait_until_finished()
        self.mgr.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs with the live arrays' shardings: the target of a restore."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)

"""A finished training run, rebuilt from its directory (what route and add_expert start from).

A run directory is self-describing: its config.json rebuilds the data and model it was trained
with, ckpt/ holds the weights (the best step by VAL AIQ, else the latest), calibration.json the
per-expert maps of p and policy.json the router deployed per budget (both fitted on VAL; runs
trained before they existed get the identity map and the orchestrator at every budget).
The directory may be a bucket URI (gs://bucket/runs/x, read through etils.epath); its record
store is local (config.data.records, jobs/common.py).
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
from etils import epath
from flax import nnx

from leeroo_jax import fileio
from leeroo_jax.data.dataset import Dataset
from leeroo_jax.errors import ConfigError
from leeroo_jax.jobs import common
from leeroo_jax.orchestrator import pcal
from leeroo_jax.orchestrator import policy as policy_lib
from leeroo_jax.orchestrator.backbone import Backbone
from leeroo_jax.orchestrator.model import Orchestrator
from leeroo_jax.training import trainer as trainer_lib
from leeroo_jax.training.checkpoint import Checkpointer, abstract_like, check_identity
from leeroo_jax.weights import assets
from leeroo_jax.weights.loader import load


@dataclasses.dataclass
class Run:
    cfg: ml_collections.ConfigDict  # the training config, as saved
    data: Dataset  # with data.vecs
    trainer: trainer_lib.Trainer  # holding the restored state
    step: int
    calibration: pcal.Calibration  # applied to the head's p before any choice
    policy: policy_lib.Policy | None  # None: the orchestrator serves every budget

    def predict(self, rows):
        """Calibrated p [len(rows), E] of the dataset's questions."""
        return self.calibration.apply(self.trainer.predict(rows))

    def router_for(self, mean_budget: float) -> str:
        return policy_lib.PRIMARY if self.policy is None else self.policy.router_for(mean_budget)


def train_config(run_dir: str | os.PathLike, records: str = "") -> ml_collections.ConfigDict:
    """The run's config as saved. `records`: a local record store to read when the run's own is
    <run dir>/records in a bucket (a run copied there whole); ignored otherwise."""
    run_dir = epath.Path(run_dir)
    try:
        is_run = (run_dir / "config.json").exists() and (run_dir / "ckpt").is_dir()
        saved = (run_dir / "config.json").read_text() if is_run else None
    except Exception as e:  # noqa: BLE001 - a bucket's client errors: no gcsfs, credentials, HTTP
        if fileio.is_local(run_dir):
            raise
        raise ConfigError(f"cannot read config.checkpoint={str(run_dir)!r} ({fileio.reason(e)}); "
                          f"{fileio.client_fix(e)}") from None
    if saved is None:
        raise ConfigError(f"config.checkpoint={str(run_dir)!r} is not a training run directory (no config.json "
                          "and ckpt/); pass checkpoints/<run_name> of a finished `leeroo_jax.train` run")
    cfg = ml_collections.ConfigDict(json.loads(saved))
    cfg.output_root, cfg.run_name = str(run_dir.parent), run_dir.name  # the run's own record store
    if "records" not in cfg.data:  # runs saved before config.data.records existed used <run>/records
        cfg.data.records = ""
    if not cfg.data.records and records and not fileio.is_local(run_dir):
        cfg.data.records = records
    return cfg


def load_run(run_dir: str | os.PathLike, data: Dataset | None = None, records: str = "",
             mesh: dict | None = None) -> Run:
    """Rebuild a training run's model and data and restore its best (else latest) checkpoint.
    `data`: the run's dataset when the caller has loaded it already (its embeddings are added);
    `records`: as in `train_config`; `mesh`: config.mesh sizes to restore onto instead of the
    run's own (a run trained on a pod is served on the devices at hand; Orbax reshards)."""
    cfg = train_config(run_dir, records)
    if mesh is not None:
        cfg.mesh = ml_collections.ConfigDict(dict(mesh))
    if data is None:
        data = common.load_dataset(cfg)
    elif data.vecs is None:
        data.vecs = common.embed(cfg, data.texts)
    trainer = trainer_lib.build(cfg, data)
    run_dir = epath.Path(run_dir)
    ckpt = Checkpointer(run_dir / "ckpt")
    step = ckpt.best_step()
    step = ckpt.latest_step() if step is None else step  # the best can be step 0 (an anchored head)
    if step is None:
        raise ConfigError(f"{run_dir}/ckpt holds no checkpoint; train the run first")
    check_identity(ckpt.meta(step), cfg, ckpt.directory)
    restored, _ = ckpt.restore(step, abstract_like(nnx.to_pure_dict(trainer.state)))
    ckpt.close()
    nnx.replace_by_pure_dict(trainer.state, restored)
    cal = pcal.Calibration("none")
    if (run_dir / "calibration.json").exists():
        cal = pcal.Calibration.from_json(_read_json(run_dir / "calibration.json"))
        if cal.num_experts not in (None, len(data.pool)):
            raise ConfigError(f"{run_dir}/calibration.json maps {cal.num_experts} experts but the run's pool has "
                              f"{len(data.pool)}; retrain the run to rebuild it")
    pol = policy_lib.Policy.from_json(_read_json(run_dir / "policy.json")) if (run_dir / "policy.json").exists() else None
    return Run(cfg, data, trainer, step, cal, pol)


def _read_json(path: epath.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); retrain the run to rebuild it") from None


def scoring_model(run: Run) -> tuple[Orchestrator, Backbone]:
    """(model with its backbone attached, a Backbone used to tokenize and bucket)."""
    model = nnx.merge(run.trainer.graphdef, run.trainer.state)[0]
    loaded = run.trainer.backbone  # fine-tuning modes: the trainer loaded it (the trained weights are in model)
    if model.backbone is None:  # a frozen-mode run stored only its head: attach the pretrained backbone
        loaded = load(assets.backbone_path(run.cfg.backbone.path), run.trainer.mesh)
        model = Orchestrator(model.head, loaded.model, run.cfg.backbone.pooling)
    return model, Backbone(loaded, run.cfg.backbone.pooling, run.cfg.backbone.max_length)

"""Config checks at the entry point: one-line errors for bad values, before any work starts."""

from __future__ import annotations

import sys

from absl import app, flags, logging

from leeroo_jax import compile_cache, distributed
from leeroo_jax.data.pool import Pool
from leeroo_jax.errors import ConfigError, LeerooError, run_main
from leeroo_jax.orchestrator import pcal
from leeroo_jax.orchestrator.explore import STRATEGIES
from leeroo_jax.orchestrator.select import MODES
from leeroo_jax.training.trainer import anchor_index

JOBS = ("baselines", "route", "add_expert", "experts")
TRAIN_MODES = ("frozen", "last_k", "full")
SPLITS = ("test", "val")
POOLINGS = ("mean", "cls", "last")


def check(cfg) -> None:
    if cfg.job not in JOBS:
        raise ConfigError(f"config.job={cfg.job!r} is not a job; choose one of {', '.join(JOBS)}")
    if cfg.eval.split not in SPLITS:
        raise ConfigError(f"config.eval.split={cfg.eval.split!r}; choose one of {', '.join(SPLITS)}")
    if cfg.backbone.pooling not in POOLINGS:
        raise ConfigError(f"config.backbone.pooling={cfg.backbone.pooling!r}; choose one of {', '.join(POOLINGS)}")
    names = list(Pool.from_config(cfg.pool).names)  # every pool check, before any work starts
    for field in ("weak", "strong"):
        if cfg.eval[field] not in names:
            raise ConfigError(f"config.eval.{field}={cfg.eval[field]!r} is not in config.pool; name a pool expert")
    if not all(isinstance(k, int) and k > 0 for k in cfg.eval.knn_ks):
        raise ConfigError(f"config.eval.knn_ks={tuple(cfg.eval.knn_ks)} must be positive integers")
    if cfg.job in ("route", "add_expert") and not cfg.checkpoint:
        raise ConfigError(f"config.job={cfg.job} needs --config.checkpoint=checkpoints/<run_name> (a training run)")
    if cfg.route.mode not in MODES:
        raise ConfigError(f"config.route.mode={cfg.route.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.route.calibrate_on not in ("", "val"):
        raise ConfigError(f"config.route.calibrate_on={cfg.route.calibrate_on!r}; choose '' (no calibration) or val")
    if cfg.data.extra_experts not in ("error", "skip"):
        raise ConfigError(f"config.data.extra_experts={cfg.data.extra_experts!r}; choose error or skip")
    x = cfg.experts
    if not all(isinstance(x[k], int) and x[k] > 0 for k in ("batch_size", "max_tokens", "max_new_tokens")) or x.limit < 0:
        raise ConfigError("config.experts: batch_size, max_tokens and max_new_tokens must be positive, limit >= 0")
    if cfg.backbone.batch_size <= 0 or cfg.backbone.max_length <= 0:
        raise ConfigError("config.backbone.batch_size and max_length must be positive")


def check_train(cfg) -> None:
    check(cfg)
    t = cfg.train
    if t.mode not in TRAIN_MODES:
        raise ConfigError(f"config.train.mode={t.mode!r}; choose one of {', '.join(TRAIN_MODES)}")
    for name in ("steps", "batch_size", "hidden", "log_every", "eval_every", "keep", "last_k", "accumulate", "ensemble"):
        if not (isinstance(t[name], int) and t[name] > 0):
            raise ConfigError(f"config.train.{name}={t[name]!r} must be a positive integer")
    if not t.lr > 0 or not 0 <= t.dropout < 1 or not 0 <= t.soft_weight <= 1:
        raise ConfigError("config.train: lr must be > 0, dropout in [0, 1), soft_weight in [0, 1]")
    if not 0 < t.layer_decay <= 1 or not t.backbone_lr_scale >= 0:
        raise ConfigError("config.train: layer_decay must be in (0, 1] and backbone_lr_scale >= 0")
    anchor_index(cfg)  # a one-line error for an anchor naming no side feature
    if t.tune and t.mode != "frozen":
        raise ConfigError(f"config.train.tune=true sweeps frozen-mode heads; tune with --config.train.mode=frozen, "
                          f"then fine-tune from that run (init_head_from), not mode={t.mode}")
    if t.calibration not in pcal.KINDS:
        raise ConfigError(f"config.train.calibration={t.calibration!r}; choose one of {', '.join(pcal.KINDS)}")
    if t.steps % t.accumulate:
        raise ConfigError(f"config.train.steps={t.steps} must be a multiple of accumulate={t.accumulate}")


def check_selfplay(cfg) -> None:
    check_train(cfg)
    sp = cfg.selfplay
    if cfg.train.mode != "frozen":
        raise ConfigError(f"self-play explores with MC dropout over the frozen-mode head; set --config.train.mode=frozen "
                          f"(got {cfg.train.mode})")
    if sp.strategy not in STRATEGIES:
        raise ConfigError(f"config.selfplay.strategy={sp.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not (isinstance(sp.rounds, int) and sp.rounds >= 0) or not 0 < sp.start_fraction <= 1:
        raise ConfigError("config.selfplay: rounds must be an integer >= 0 and start_fraction in (0, 1]")
    if not sp.calls_per_round > 0 or not sp.usd_per_round > 0 or not (isinstance(sp.samples, int) and sp.samples > 0):
        raise ConfigError("config.selfplay: calls_per_round, usd_per_round and samples must be positive")
    if sp.benchmark and (sp.strategy == "uniform" or not (isinstance(sp.bench_seeds, int) and sp.bench_seeds > 0)):
        raise ConfigError("config.selfplay.benchmark compares a strategy other than uniform with uniform, over "
                          "bench_seeds >= 1 seeds; set --config.selfplay.strategy=thompson")
    if not (isinstance(sp.steps, int) and sp.steps > 0):
        raise ConfigError(f"config.selfplay.steps={sp.steps!r} must be a positive integer")
    if sp.source not in ("bank", "generator"):
        raise ConfigError(f"config.selfplay.source={sp.source!r}; choose bank or generator")
    if sp.source == "generator":
        pool = Pool.from_config(cfg.pool)
        live = [e.name for e in pool.experts if e.live]
        if not live:
            raise ConfigError("config.selfplay.source=generator, but no pool expert can answer a generated question (all "
                              "are recorded); add a live expert (backend='flax') to config.pool")
        if sp.generator not in live:
            raise ConfigError(f"config.selfplay.generator={sp.generator!r} must name a live pool expert ({', '.join(live)})")
        if sp.judge != "weighted_majority" or not 0 < sp.judge_prior_accuracy < 1:
            raise ConfigError("config.selfplay.judge must be weighted_majority, judge_prior_accuracy in (0, 1)")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad --config.<key> as one `error:` line and exit 2 (an
    unknown key surfaces from ml_collections as a KeyError, which absl would print as a traceback)."""
    try:
        return flags.FLAGS(argv)
    except LeerooError as e:  # raised by the config file itself (e.g. a bad price table)
        print(f"error: {e}", file=sys.stderr)
    except KeyError as e:
        msg = " ".join(str(e.args[0] if e.args else e).split())
        print(f"error: unknown config key: {msg}; see configs/base.py for the keys", file=sys.stderr)
    except (flags.Error, ValueError, TypeError) as e:
        print(f"error: {' '.join(str(e).split())}; fix the flag's value", file=sys.stderr)
    sys.exit(2)


def absl_run(config_flag, check_fn, job_fn) -> None:
    """An absl entry point: parse flags (bad ones: one line), validate the config, start jax
    (multi-host aware, compile cache on), run `job_fn(cfg)`; a LeerooError exits 2 with one line."""

    def run() -> None:
        cfg = config_flag.value
        check_fn(cfg)
        dist = cfg.get("distributed") or {}
        distributed.initialize(dist.get("heartbeat_timeout_s", 100), dist.get("shutdown_timeout_s", 300))
        compile_cache.enable()
        job_fn(cfg)

    def main(argv) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go through --config.<key>=<value>")
        if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; -v 0 brings it back
            logging.set_verbosity(logging.WARNING)
        run_main(run)

    app.run(main, flags_parser=_parse_flags)

"""Building and running a server from command-line settings (the entry point is serve.py)."""

from __future__ import annotations

import argparse
import os
import pathlib
import time

from leeroo_jax.data.pool import Expert
from leeroo_jax.errors import ConfigError
from leeroo_jax.experts.chat import LiveChat
from leeroo_jax.jobs.runs import load_run
from leeroo_jax.serving import backends as backends_lib
from leeroo_jax.serving.api import Orchestrator
from leeroo_jax.serving.app import Service, Settings, create_app

KEYS_ENV = "LEEROO_API_KEYS"  # comma-separated keys, when no --api-keys-file is given


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m leeroo_jax.serve", description=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a training run directory (checkpoints/mmlu): route among its experts")
    what.add_argument("--expert", help="serve one live model directly (smollm2, an HF dir), like a vLLM endpoint")
    p.add_argument("--name", default="", help="--expert: the model name it answers as (default: the checkpoint's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-keys-file", "--api_keys_file", default="", help=f"one key a line (or ${KEYS_ENV}=k1,k2)")
    p.add_argument("--endpoints", default="", help="JSON file: expert name -> {base_url, api_key_env, model}")
    p.add_argument("--no-live", action="store_true", help="do not run the pool's flax experts here")
    p.add_argument("--route-only", action="store_true",
                   help="route among every expert of the pool and call none: only /v1/route answers (load tests, dry runs)")
    p.add_argument("--records", default="", help="a local record store for a run kept in a bucket")
    p.add_argument("--max-batch", type=int, default=64, help="routing requests scored in one batch at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-prompt-chars", type=int, default=32_000)
    p.add_argument("--max-tokens", type=int, default=256, help="default and ceiling of a request's max_tokens")
    p.add_argument("--request-timeout-s", type=float, default=120.0)
    p.add_argument("--expert-timeout-s", type=float, default=60.0, help="an endpoint slower than this counts as down")
    p.add_argument("--chat-batch", type=int, default=4, help="live experts: chats decoded in one batch at most")
    p.add_argument("--chat-max-length", type=int, default=512, help="live experts: longest prompt, tokens")
    p.add_argument("--no-warmup", action="store_true", help="skip compiling every shape at start-up")
    return p


def api_keys(path: str) -> frozenset:
    if path:
        file = pathlib.Path(path)
        if not file.is_file():
            raise ConfigError(f"--api-keys-file {path} does not exist; give a file with one key a line")
        keys = [line.strip() for line in file.read_text().splitlines()]
    else:
        keys = os.environ.get(KEYS_ENV, "").split(",")
    return frozenset(k for k in keys if k)


def _chat_kw(args) -> dict:
    # Few, coarse buckets: each is a decode loop compiled at start-up (~20 s each for SmolLM2 on
    # 2 CPU cores, then cached on disk); padding a prompt up to 4x costs less than that here.
    sizes = [b for b in (1, 4, 16, 64) if b < args.chat_batch] + [args.chat_batch]
    lengths = [t for t in (128, 512, 2048) if t < args.chat_max_length] + [args.chat_max_length]
    return {"batch_sizes": sizes, "lengths": lengths, "max_new_tokens": args.max_tokens}


def _say(line: str) -> None:
    print(line, flush=True)


def _one_expert(args) -> backends_lib.Backends:
    """--expert: one live model answering as itself (an endpoint for other servers)."""
    name = args.name or pathlib.Path(args.expert).name
    chat = LiveChat.load(Expert(name, 0.0, 0.0, backend="flax", checkpoint=args.expert, recipe="chat"), **_chat_kw(args))
    return backends_lib.Backends({name: backends_lib.LiveBackend(chat)}, [], {name: "live (flax)"})


def _router(args) -> tuple[Orchestrator, backends_lib.Backends]:
    """--checkpoint: the run's router and the experts that can answer (none with --route-only)."""
    run = load_run(args.checkpoint, records=args.records)
    sizes = [1 << k for k in range(12) if 1 << k < args.max_batch] + [args.max_batch]  # powers of two
    if args.route_only:
        _say(f"route only: {len(run.data.pool)} experts, none called")
        return Orchestrator(run, None, sizes), backends_lib.Backends({}, [], {})
    endpoints = backends_lib.read_endpoints(args.endpoints, run.data.pool) if args.endpoints else {}
    backends = backends_lib.build(run.data.pool, endpoints, None, not args.no_live, args.expert_timeout_s,
                                  args.max_wait_ms / 1000, _chat_kw(args))
    if not backends.by_expert:
        raise ConfigError(f"no expert of {args.checkpoint} can answer: all are recorded-only "
                          f"({', '.join(backends.excluded)}); map them to endpoints with --endpoints, add live "
                          "experts (make serve does), or pass --route-only")
    return Orchestrator(run, backends.by_expert, sizes), backends


def build(args) -> Service:
    """The service, saying what answers, what is excluded and what was compiled as it goes."""
    settings = Settings(api_keys(args.api_keys_file), args.max_batch, args.max_wait_ms, args.max_prompt_chars,
                        args.max_tokens, args.request_timeout_s)
    t0 = time.perf_counter()
    orch, backends = (None, _one_expert(args)) if args.expert else _router(args)
    if backends.kinds:
        _say("experts: " + "; ".join(f"{n} ({k})" for n, k in backends.kinds.items()))
    if backends.excluded:
        _say(f"excluded (recorded only, no endpoint): {', '.join(backends.excluded)}")
    if not args.no_warmup:
        if orch is not None:
            _say(f"compiled {orch.warmup()} routing shapes ({time.perf_counter() - t0:.0f} s)")
        for b in {id(b): b for b in backends.by_expert.values()}.values():
            if isinstance(b, backends_lib.LiveBackend):
                _say(f"compiled {b.chat.warmup()} decoding shapes of {b.chat.name} ({time.perf_counter() - t0:.0f} s)")
    _say(f"ready in {time.perf_counter() - t0:.0f} s; auth {'on' if settings.api_keys else 'off'}")
    return Service(orch, backends, settings)


def main(argv=None) -> int:
    import uvicorn

    args = parser().parse_args(argv)
    service = build(args)
    _say(f"serving on http://{args.host}:{args.port}/v1")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0

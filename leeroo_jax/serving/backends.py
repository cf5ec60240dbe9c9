"""Which experts a server can ask, and how: from the run's pool and an optional endpoints file.

Per expert, in order:
  1. an endpoint (the endpoints file, else the pool entry's `endpoint`): experts/remote.py;
  2. a flax expert (`backend="flax"`): its decoder is run here (experts/chat.py LiveChat),
     concurrent requests decoded in one batch;
  3. otherwise (a recorded-only expert) it cannot answer: excluded, and the router picks among
     the rest.

The endpoints file maps expert names to OpenAI-compatible endpoints, so a run trained on the
recorded outcomes can be served by the real models without retraining:

    {"gpt-4-1106-preview": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
     "mistralai/Mistral-7B-v0.1": {"base_url": "http://localhost:8001/v1", "model": "mistral-7b"}}
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import AsyncIterator

from leeroo_jax.data.pool import Pool
from leeroo_jax.errors import ConfigError
from leeroo_jax.experts.chat import Completion, LiveChat, chunks
from leeroo_jax.experts.remote import RemoteExpert
from leeroo_jax.serving.batching import Batcher

ENDPOINT_KEYS = ("base_url", "api_key_env", "model")


def read_endpoints(path: str, pool: Pool) -> dict[str, dict]:
    """{expert name: {base_url, api_key_env, model}} from a JSON file, checked against the pool."""
    file = pathlib.Path(path)
    try:
        raw = json.loads(file.read_text())
    except OSError as e:
        raise ConfigError(f"endpoints file {path}: {e.strerror}; pass a JSON file mapping expert names to "
                          "{base_url, api_key_env, model}") from None
    except ValueError as e:
        raise ConfigError(f"endpoints file {path} is not JSON ({e}); map expert names to {{base_url, ...}}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"endpoints file {path} must map expert names to {{base_url, api_key_env, model}}")
    for name, entry in raw.items():
        if name not in pool.names:
            raise ConfigError(f"endpoints file {path}: {name!r} is no expert of the run's pool ({', '.join(pool.names)})")
        if not isinstance(entry, dict) or not str(entry.get("base_url", "")).startswith(("http://", "https://")):
            raise ConfigError(f"endpoints file {path}: {name!r} needs a base_url like http://host:port/v1")
        unknown = sorted(set(entry) - set(ENDPOINT_KEYS))
        if unknown:
            raise ConfigError(f"endpoints file {path}: {name!r} has unknown keys {unknown}; allowed: {list(ENDPOINT_KEYS)}")
    return raw


class LiveBackend:
    """A LiveChat behind a Batcher: concurrent chats decode as one batch."""

    def __init__(self, chat: LiveChat, max_wait_s: float = 0.005):
        self.chat = chat
        self.batcher = Batcher(self._reply, chat.batch_sizes[-1], max_wait_s)

    def _reply(self, items: list) -> list[Completion]:
        return self.chat.reply([m for m, _ in items], [t for _, t in items])

    async def complete(self, messages: list[dict], max_tokens: int) -> Completion:
        return await self.batcher.submit((messages, max_tokens))

    async def stream(self, messages: list[dict], max_tokens: int) -> AsyncIterator[str]:
        """The whole answer decoded in its batch, then sent word by word (no per-token stream)."""
        done = await self.complete(messages, max_tokens)
        for piece in chunks(done.text):
            yield piece

    async def aclose(self) -> None:
        await self.batcher.close()


@dataclasses.dataclass
class Backends:
    by_expert: dict  # name -> a backend (RemoteExpert | LiveBackend)
    excluded: list[str]  # recorded-only experts: no way to ask them
    kinds: dict[str, str]  # name -> "endpoint <url>" | "live (flax)"

    async def aclose(self) -> None:
        for b in {id(b): b for b in self.by_expert.values()}.values():  # a shared LiveBackend once
            await b.aclose()


def build(pool: Pool, endpoints: dict[str, dict] | None = None, mesh=None, live: bool = True, timeout_s: float = 60.0,
          max_wait_s: float = 0.005, chat_kw: dict | None = None) -> Backends:
    endpoints = endpoints or {}
    out, excluded, kinds = {}, [], {}
    loaded: dict[str, LiveBackend] = {}  # one decoder and batch per checkpoint+dtype: 0- and 5-shot SmolLM2 share it
    for e in pool.experts:
        ep = endpoints.get(e.name) or ({"base_url": e.endpoint, "api_key_env": e.api_key_env, "model": e.endpoint_model}
                                       if e.endpoint else None)
        if ep:
            out[e.name] = RemoteExpert(e.name, ep["base_url"], ep.get("model", ""), ep.get("api_key_env", ""), timeout_s)
            kinds[e.name] = f"endpoint {ep['base_url']}"
        elif e.live and live:
            key = f"{e.checkpoint}|{e.dtype}"
            if key not in loaded:
                loaded[key] = LiveBackend(LiveChat.load(e, mesh, **(chat_kw or {})), max_wait_s)
            out[e.name] = loaded[key]
            kinds[e.name] = "live (flax)"
        else:
            excluded.append(e.name)
    return Backends(out, excluded, kinds)

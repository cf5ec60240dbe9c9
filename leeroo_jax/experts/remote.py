"""An expert behind an OpenAI-compatible endpoint (vLLM, Ollama, a cloud API, or another
leeroo_jax server): POST {base_url}/chat/completions, plain or streamed (server-sent events).

The key is read from the environment variable the pool entry names, at each call, so it never
sits in a config file, a log line or a metric. Any failure to get an answer (refused
connection, timeout, an error status, a malformed body) is a `BackendError`: the server then
asks the next expert under the same budget.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import AsyncIterator

import httpx2 as httpx

from leeroo_jax.experts.chat import BackendError, Completion


class RemoteExpert:
    def __init__(self, name: str, base_url: str, model: str = "", api_key_env: str = "", timeout_s: float = 60.0):
        self.name, self.base_url, self.model = name, base_url.rstrip("/"), model or name
        self.api_key_env, self.timeout_s = api_key_env, timeout_s
        self._clients: dict[int, httpx.AsyncClient] = {}  # one pooled client per event loop

    def _client(self) -> httpx.AsyncClient:
        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            self._clients[loop] = httpx.AsyncClient(timeout=self.timeout_s)
        return self._clients[loop]

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, messages: list[dict], max_tokens: int, stream: bool) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": int(max_tokens), "stream": stream}

    def _failed(self, what: str) -> BackendError:
        return BackendError(f"expert {self.name} at {self.base_url}: {what}")

    async def complete(self, messages: list[dict], max_tokens: int) -> Completion:
        try:
            r = await self._client().post(f"{self.base_url}/chat/completions", headers=self._headers(),
                                          json=self._body(messages, max_tokens, False))
        except httpx.HTTPError as e:  # refused, reset, timed out
            raise self._failed(type(e).__name__) from None
        if r.status_code != 200:
            raise self._failed(f"HTTP {r.status_code}")
        try:
            body = r.json()
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Completion(choice["message"]["content"] or "", int(usage.get("prompt_tokens", 0)),
                              int(usage.get("completion_tokens", 0)), choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError):
            raise self._failed("a response that is not a chat completion") from None

    async def stream(self, messages: list[dict], max_tokens: int) -> AsyncIterator[str]:
        """Content deltas as they arrive. A failure before the first delta is a BackendError
        (the caller can still fall back); after it, the stream just ends with the error."""
        try:
            async with self._client().stream("POST", f"{self.base_url}/chat/completions", headers=self._headers(),
                                             json=self._body(messages, max_tokens, True)) as r:
                if r.status_code != 200:
                    raise self._failed(f"HTTP {r.status_code}")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise self._failed("a stream event that is not a chat completion chunk") from None
                    if delta:
                        yield delta
        except httpx.HTTPError as e:
            raise self._failed(type(e).__name__) from None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

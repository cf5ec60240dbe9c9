"""Dynamic batching: concurrent requests become one call of a batched function.

The first request of a batch waits up to `max_wait_s` for others to join it (not at all once
`max_batch` are queued); the batch then runs `fn(items)` on one worker thread, so device work
runs one batch at a time and the event loop keeps accepting requests meanwhile. `fn` returns
one result per item, or an Exception instance for an item that failed alone. `on_batch(size,
seconds)` hears of each batch once it ran: its size and the worker's time on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any, Callable, Sequence


class ShuttingDown(RuntimeError):
    """The server stops: a request that arrives after `close` is refused, not left waiting."""


_STOP = object()


class Batcher:
    def __init__(self, fn: Callable[[list], Sequence[Any]], max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch {max_batch} must be >= 1 and max_wait_s {max_wait_s} >= 0")
        self.fn, self.max_batch, self.max_wait_s, self.on_batch = fn, max_batch, max_wait_s, on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batcher")
        self._closed = False

    async def submit(self, item) -> Any:
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop:  # started on first use in each event loop (a
            self._loop, self._queue = loop, asyncio.Queue()  # server has one; each get_response() call its own)
            self._task = loop.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> tuple[list, bool]:
        """(the next batch, whether close() was called behind it)."""
        batch, stop = [await self._queue.get()], False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch and batch[-1] is not _STOP:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        if batch[-1] is _STOP:
            batch, stop = batch[:-1], True
        return [(item, f) for item, f in batch if not f.done()], stop  # a cancelled request is dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            batch, stop = await self._collect()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 - the whole batch failed: each request hears why
                results = [e] * len(batch)
            if self.on_batch:
                self.on_batch(len(batch), time.perf_counter() - start)
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        """Refuse new requests, answer the queued ones, then stop the worker."""
        self._closed = True
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
        self._pool.shutdown(wait=True)

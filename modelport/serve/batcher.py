"""Server-side dynamic batching, as Triton's dynamic batcher does it: concurrent requests for one model are
gathered up to the preferred batch size within the queue delay, run as one batch, and split back."""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from modelport.serve.protocol import ProtocolError

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]
QUEUE_BATCHES = 4  # default queue bound: this many full batches (of at least 8 requests) per instance


class QueueFull(ProtocolError):
    def __init__(self, name: str, size: int) -> None:
        super().__init__(f"model {name!r} has {size} requests waiting, its queue's limit; try again later", 429)


def default_queue_size(max_batch: int, instances: int) -> int:
    return QUEUE_BATCHES * max(max_batch, 8) * max(instances, 1)


@dataclass(slots=True)
class _Item:
    batch: np.ndarray
    future: asyncio.Future


@dataclass(slots=True)
class BatchStats:
    """Counts as Triton reports them: requests (inference_count rows) and model executions."""

    requests: int = 0
    rows: int = 0
    executions: int = 0
    compute_ns: int = 0
    batch_sizes: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    batch_ns: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))


class DynamicBatcher:
    """One queue per model version, one worker per model instance (each with its own runner).

    ``max_batch`` 0 means the model takes no batching (fixed-shape requests run one by one).
    A batch is sent as soon as it reaches the largest preferred size, or reaches any preferred size with
    nothing else waiting, or when the oldest request has waited ``delay_s``. At most ``max_queue`` requests
    wait (default: ``default_queue_size``); past that, ``submit`` raises ``QueueFull`` at once, so a flood
    costs a bounded amount of memory.
    """

    def __init__(self, instances: list[Infer], *, max_batch: int, preferred: tuple[int, ...] = (),
                 delay_s: float = 0.0, enabled: bool = True, max_queue: int | None = None, name: str = "") -> None:
        self.instances = instances
        self.name = name
        self.max_queue = max_queue or default_queue_size(max_batch, len(instances))
        self.max_batch = max_batch
        self.enabled = enabled and max_batch > 0
        self.preferred = tuple(sorted(p for p in preferred if p <= max_batch)) if max_batch else ()
        self.target = self.preferred[-1] if self.preferred else max_batch
        self.delay_s = delay_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: collections.deque[_Item] = collections.deque()
        self._workers: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=len(self.instances), thread_name_prefix="modelport-infer")
        self._workers = [asyncio.create_task(self._work(infer)) for infer in self.instances]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for ``batch`` (its rows only), computed alone or together with concurrent requests."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(batch, future))
        except asyncio.QueueFull:
            raise QueueFull(self.name, self.max_queue) from None
        # a caller that gives up (a deadline) cancels the future; the worker then skips the request
        return await future

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry:
            return self._carry.popleft()
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[_Item]:
        first = await self._next(None)
        items, rows = [first], len(first.batch)
        if not self.enabled:
            return items
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delay_s
        while rows < self.target:
            waiting = bool(self._carry) or not self._queue.empty()
            if rows in self.preferred and not waiting:
                break
            item = await self._next(deadline - loop.time())
            if item is None:
                break
            if rows + len(item.batch) > self.max_batch or item.batch.shape[1:] != first.batch.shape[1:]:
                self._carry.appendleft(item)  # starts the next batch
                break
            items.append(item)
            rows += len(item.batch)
        return items

    async def _work(self, infer: Infer) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            live = [it for it in items if not it.future.done()]  # a client may have gone away
            if not live:
                continue
            batch = live[0].batch if len(live) == 1 else np.concatenate([it.batch for it in live])
            start = time.perf_counter_ns()
            try:
                outputs = await loop.run_in_executor(self._executor, infer, batch)
            except Exception as exc:  # the model failed on this batch: fail its requests, keep serving
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            self._record(len(live), len(batch), time.perf_counter_ns() - start)
            offset = 0
            for it in live:
                n = len(it.batch)
                if not it.future.done():
                    it.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
                offset += n

    def _record(self, requests: int, rows: int, ns: int) -> None:
        self.stats.requests += requests
        self.stats.rows += rows
        self.stats.executions += 1
        self.stats.compute_ns += ns
        self.stats.batch_sizes[rows] += 1
        self.stats.batch_ns[rows] += ns

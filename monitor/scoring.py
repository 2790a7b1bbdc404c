"""The fusion model's owner: one task gathers the windows waiting (from every stream) into batches.

:class:`ScoreService` takes requests (:meth:`ScoreService.submit`: a featurized window, the stream
it came from, final or partial) and answers each with a future. Its task (:meth:`serve`) takes the
first request waiting, then whatever else arrives within ``max_wait_ms`` up to ``max_batch``, and
runs one forward pass on its own worker thread (:class:`~mmsa.monitor.scorer.Scorer` is blocking).

* Fairness: requests wait in one queue per stream and a batch takes them round-robin, oldest
  stream first, so a chatty stream cannot starve a quiet one.
* Finals first: a partial score is dropped (its future answers None) whenever a final window of
  any stream is waiting, so partials never delay a result, and finals are never batched with them.
* Errors stay with their window: if a batch fails, each of its windows is retried alone, and only
  a window that fails alone gets the exception (:class:`WindowFailed`); the loop goes on.

One dedicated thread, not asyncio's shared pool: the allocator gives each thread that runs a
forward pass its own arena, and each arena keeps the peak of the large temporary maps (the face
mesh's 192x192 inputs), so scoring on whichever pool thread is free multiplied that memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mmsa.model import Sample

from .scorer import Scorer, Scores

log = logging.getLogger(__name__)


class WindowFailed(Exception):
    """Scoring one window failed; ``__cause__`` is the original error."""


@dataclass(frozen=True)
class Scored:
    """A window's model output and the duration of the forward pass that computed it."""

    scores: Scores
    model_ms: float


@dataclass(eq=False)
class _Request:
    sample: Sample
    stream: str
    partial: bool
    future: asyncio.Future[Scored | None]
    t_submit: float = field(default_factory=time.monotonic)


class ScoreService:
    """Batched scoring for every stream of the process (module docstring)."""

    def __init__(self, scorer: Scorer, *, max_batch: int = 8, max_wait_ms: int = 0) -> None:
        self.scorer = scorer
        self.max_batch = max(1, max_batch)
        self.max_wait_ms = max_wait_ms
        self._queues: OrderedDict[str, deque[_Request]] = OrderedDict()  # per stream, in round-robin order
        self._waiting = asyncio.Event()
        self.n_batches = 0
        self.n_scored = 0
        self.partials_dropped = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def finals_waiting(self, stream: str | None = None) -> int:
        queues = self._queues.values() if stream is None else [self._queues.get(stream, deque())]
        return sum(1 for q in queues for r in q if not r.partial)

    def submit(self, sample: Sample, *, stream: str = "", partial: bool = False) -> asyncio.Future[Scored | None]:
        """Queue a window; the future answers its :class:`Scored` (None: a partial that was dropped)."""
        fut: asyncio.Future[Scored | None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(stream, deque()).append(_Request(sample, stream, partial, fut))
        self._waiting.set()
        return fut

    async def serve(self) -> None:
        """Score what arrives until cancelled (the owner cancels it once every stream has drained)."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer") as thread:  # every forward pass
            try:
                while True:
                    await self._wait_for_work()
                    batch = await self._gather(loop)
                    if batch:
                        await self._score(loop, thread, batch)
            finally:
                self._cancel_all()

    async def _wait_for_work(self) -> None:
        while not len(self):
            self._waiting.clear()
            await self._waiting.wait()

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """Wait up to ``max_wait_ms`` for a full batch, then take one, round-robin over the streams."""
        deadline = loop.time() + self.max_wait_ms / 1000
        while len(self) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._waiting.clear()
            try:
                await asyncio.wait_for(self._waiting.wait(), remaining)
            except asyncio.TimeoutError:
                break
        self._drop_partials()
        return self._take(self.max_batch)

    def _drop_partials(self) -> None:
        """Finals first: while a final window waits, the waiting partials are answered None."""
        if not self.finals_waiting():
            return
        for q in self._queues.values():
            for r in [r for r in q if r.partial]:
                q.remove(r)
                self.partials_dropped += 1
                if not r.future.done():
                    r.future.set_result(None)

    def _take(self, n: int) -> list[_Request]:
        """Up to ``n`` requests, one per stream in turn; a stream served moves to the back of the order."""
        batch: list[_Request] = []
        while len(batch) < n and len(self):
            for stream in list(self._queues):
                q = self._queues[stream]
                if q:
                    batch.append(q.popleft())
                    self._queues.move_to_end(stream)
                    if len(batch) == n:
                        break
        for stream in [s for s, q in self._queues.items() if not q]:
            del self._queues[stream]
        return batch

    async def _score(self, loop: asyncio.AbstractEventLoop, thread: ThreadPoolExecutor, batch: list[_Request]) -> None:
        t = time.perf_counter()
        try:
            results = await loop.run_in_executor(thread, self.scorer.score, [r.sample for r in batch])
        except Exception as exc:  # noqa: BLE001 - a bad batch must not end scoring: find the bad window
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning("scoring a batch of %d failed (%s); scoring its windows one by one", len(batch), exc)
            for r in batch:
                await self._score(loop, thread, [r])
            return
        model_ms = (time.perf_counter() - t) * 1000
        self.n_batches += 1
        self.n_scored += len(batch)
        for r, scores in zip(batch, results):
            if not r.future.done():
                r.future.set_result(Scored(scores, model_ms))

    def _fail(self, r: _Request, exc: Exception) -> None:
        if not r.future.done():
            failed = WindowFailed(str(exc) or type(exc).__name__)
            failed.__cause__ = exc
            r.future.set_exception(failed)

    def _cancel_all(self) -> None:
        for q in self._queues.values():
            for r in q:
                r.future.cancel()
        self._queues.clear()

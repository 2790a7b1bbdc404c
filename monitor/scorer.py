"""The fusion model's owner: one task batches the featurized windows waiting and scores them.

:class:`Scorer` is the blocking part (collate, forward on the device); :func:`run_scorer` is
the task that owns it: it takes the first window waiting, then whatever else arrives within
``max_wait_ms`` up to ``max_batch``, and runs one forward pass in its own worker thread. A batch
that fails is reported (``on_error``) and its windows are skipped; the loop goes on.

One dedicated thread, not asyncio's shared pool: the allocator gives each thread that runs a
forward pass its own arena, and each arena keeps the peak of the large temporary maps (the face
mesh's 192x192 inputs), so scoring on whichever pool thread is free multiplied that memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from mmsa.model import LoadedModel, Sample, collate, flush_denormals
from mmsa.model.features import MODALITIES

from .channels import Channel, ChannelClosed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Model output for one window; absent modalities have ``None`` scores."""

    score: float
    unimodal: dict[str, float | None]


def pick_torch_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import MonitorError

        raise MonitorError("--device cuda: no CUDA device is available to torch")
    return device


class Scorer:
    """Blocking batched scoring with a loaded checkpoint (call from one thread at a time)."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu") -> None:
        flush_denormals()
        self.device = device
        self.model = loaded.model.to(device).eval()
        self.tokenizer = loaded.tokenizer
        self.features = loaded.features
        self.tag = loaded.info.tag

    def score(self, samples: list[Sample]) -> list[Scores]:
        flush_denormals()  # per thread: the monitor scores on a worker thread
        batch = collate(samples, self.tokenizer, self.features).to(self.device)
        with torch.inference_mode():
            out = self.model(batch)
        fused = out.score.float().cpu().tolist()
        uni = {m: out.unimodal[m].float().cpu().tolist() for m in MODALITIES}
        res = []
        for i, s in enumerate(fused):
            res.append(Scores(float(s), {m: None if math.isnan(uni[m][i]) else float(uni[m][i]) for m in MODALITIES}))
        return res


@dataclass
class ScoreJob:
    """A featurized window waiting for the model; ``context`` travels through untouched.

    ``scores`` set (with the ``model_ms`` of the pass that computed them): the same input was
    scored already, and the job skips the forward pass but keeps its place in the order.
    """

    sample: Sample
    context: Any
    scores: Scores | None = None
    model_ms: float = 0.0


async def run_scorer(
    scorer: Scorer,
    inbox: Channel[ScoreJob],
    on_scores: Callable[[ScoreJob, Scores, float], Awaitable[None]],
    *,
    max_batch: int = 8,
    max_wait_ms: int = 10,
    on_error: Callable[[str], None] = lambda _m: None,
    select: Callable[[list[ScoreJob]], list[ScoreJob]] | None = None,
) -> None:
    """Score everything that arrives in ``inbox`` until it is closed and drained.

    ``on_scores(job, scores, model_ms)`` is awaited for each window, in arrival order.
    ``select(batch)``, when given, returns the jobs of a gathered batch worth scoring (in
    order); the others are dropped unscored (the pipeline drops stale partial scores so, and
    attaches the scores of a window it already scored).
    """
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer") as thread:  # every forward pass
        while True:
            try:
                batch = [await inbox.get()]
            except ChannelClosed:
                return
            deadline = loop.time() + max_wait_ms / 1000
            while len(batch) < max_batch:
                item = inbox.get_nowait()
                if item is None:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or inbox.closed:
                        break
                    try:
                        item = await asyncio.wait_for(inbox.get(), remaining)
                    except (asyncio.TimeoutError, ChannelClosed):
                        break
                batch.append(item)
            if select is not None:
                batch = select(batch)
                if not batch:
                    continue
            todo = [job for job in batch if job.scores is None]
            results: list[Scores] = []
            model_ms = 0.0
            if todo:
                t = time.perf_counter()
                try:
                    results = await loop.run_in_executor(thread, scorer.score, [job.sample for job in todo])
                except (RuntimeError, ValueError) as exc:  # a bad batch must not end live scoring
                    log.error("scoring %d window(s) failed: %s", len(todo), exc)
                    on_error(f"scoring failed: {exc}")
                    batch = [job for job in batch if job.scores is not None]
                model_ms = (time.perf_counter() - t) * 1000
            computed = iter(results)
            for job in batch:
                if job.scores is not None:
                    await on_scores(job, job.scores, job.model_ms)
                else:
                    await on_scores(job, next(computed), model_ms)

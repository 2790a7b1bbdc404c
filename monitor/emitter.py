"""Event building: scored windows become ScoreEvents (or partial scores) on the stream's bus.

:class:`Emitter` takes the processed windows in order, submits them to the shared scoring service
(every window waiting at once, so a replay fills its batches), and publishes each result in the
order the windows came: a final window as a :class:`ScoreEvent` numbered ``seq`` (the bus hands it
to the session log first), a partial as a :class:`PartialScore` carrying the ``seq`` the next event
will get. A final window whose speculative partial was scored takes that partial's model output
(the very same input) instead of a pass of its own. A window whose scoring failed is reported
(:class:`~mmsa.monitor.processing.ErrorReport`) and skipped; one with no usable modality is skipped
with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque

import numpy as np

from mmsa.common.scale import MODALITIES, clip_score

from .bus import EventBus
from .channels import Channel, ChannelClosed
from .events import ModalityScore, PartialScore, ScoreEvent, confidence_of
from .processing import ErrorReport, WindowResult
from .scoring import Scored, ScoreService, WindowFailed

log = logging.getLogger(__name__)


class Emitter:
    """Scores one stream's processed windows and publishes them in order (module docstring)."""

    def __init__(self, scoring: ScoreService, bus: EventBus, errors: ErrorReport, *, session_id: str, model: str,
                 stream: str = "") -> None:
        self.scoring = scoring
        self.bus = bus
        self.errors = errors
        self.session_id = session_id
        self.model = model
        self.stream = stream
        self.n_events = 0  # ScoreEvents published (the next event's seq)
        self.n_partials = 0  # partial scores published
        self.totals_ms: deque[float] = deque(maxlen=200)  # latency of the latest events

    async def run(self, results: Channel[WindowResult]) -> None:
        """Until ``results`` is closed and drained."""
        while True:
            try:
                batch = [await results.get()]
            except ChannelClosed:
                return
            while (more := results.get_nowait()) is not None:
                batch.append(more)
            pending = [self._submit(r) for r in batch]
            for r, fut in zip(batch, pending):
                scored = await self._await(r, fut)
                if scored is not None:
                    self._publish(r, scored)

    def _submit(self, r: WindowResult) -> asyncio.Future[Scored | None]:
        ahead = r.window.ahead
        if not r.window.partial and ahead is not None and ahead.scored is not None:
            return ahead.scored  # the speculative partial's pass on this very input
        fut = self.scoring.submit(r.sample, stream=self.stream, partial=r.window.partial)
        if r.window.partial:
            ahead.scored = fut  # the final of this same window (if it comes) reuses it
        return fut

    async def _await(self, r: WindowResult, fut: asyncio.Future[Scored | None]) -> Scored | None:
        try:
            scored = await asyncio.shield(fut)
            if scored is None and not r.window.partial:  # the partial it meant to reuse was dropped
                scored = await self.scoring.submit(r.sample, stream=self.stream)
            return scored
        except WindowFailed as exc:
            if not r.window.partial:
                self.errors("scoring", r.window, exc.__cause__ or exc)
            return None

    def _publish(self, r: WindowResult, scored: Scored) -> None:
        w, scores, sample = r.window, scored.scores, r.sample
        if math.isnan(scores.score):
            if not w.partial:
                log.warning("no usable modality in %.2f-%.2f s; not scored", w.t_start, w.t_end)
            return
        n_faces = 0 if sample.faces is None else int(len(sample.faces))
        present = {"text": sample.text is not None and scores.unimodal["text"] is not None,
                   "audio": scores.unimodal["audio"] is not None, "vision": scores.unimodal["vision"] is not None}
        mods = {m: ModalityScore(present[m], scores.unimodal[m] if present[m] else None) for m in MODALITIES}
        mods["vision"].face_frames = n_faces
        score = clip_score(scores.score)
        event = ScoreEvent(
            session=self.session_id, seq=self.n_events, t_start=w.t_start, t_end=w.t_end, text=r.transcript.text,
            score=score, modalities=mods, model=self.model,
            latency_ms={"asr": r.asr_ms, "model": scored.model_ms, "total": (time.monotonic() - w.closed_at) * 1000},
            confidence=confidence_of(score, {m: mods[m].score for m in MODALITIES}),
        )
        if w.partial:
            self.n_partials += 1
            self.bus.publish(PartialScore(event))
            return
        self.n_events += 1
        self.totals_ms.append(event.latency_ms["total"])
        self.bus.publish(event)  # the session log (a DURABLE sink, attached first) writes it before anyone sees it

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        if not self.totals_ms:
            return None, None
        a = np.asarray(self.totals_ms)
        return round(float(np.percentile(a, 50)), 1), round(float(np.percentile(a, 95)), 1)

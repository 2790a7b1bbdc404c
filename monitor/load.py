"""Back-pressure across streams: when the machine cannot keep up, shed work in a fixed order, and say so.

:class:`LoadGovernor` watches how far each stream's processing lags real time
(:meth:`Pipeline.behind_s`: the age of the oldest window waiting, or the audio not yet segmented).
When the worst stream lags ``load.behind_high_s`` or more, it sheds the next step of
``load.degrade`` for every stream (the models are shared, so the relief is too):

1. ``partials``: no partial scores of open utterances (they cost ASR and model passes);
2. ``speculation``: no ASR ahead of an utterance's close (results come later, not fewer);
3. ``faces``: ``load.faces_degraded`` frames per window searched for faces instead of 8;
4. ``vision``: no faces at all (audio and text only).

It waits ``HOLD_S`` after each step to see its effect. Once every stream lags less than
``load.behind_low_s`` for ``load.recover_s``, the last step comes back. The steps in force are
in every stream's status (``degraded``: the dashboard, MQTT ``health``, Prometheus) and logged.
A final score is never shed: live, only sliding windows of long speech may be dropped from a full
queue (``assembler.py``), never the window that ends an utterance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from .config import LoadConfig
from .engine import Engine
from .pipeline import Pipeline

log = logging.getLogger(__name__)

HOLD_S = 2.0  # after a step, the time the queues get to show its effect
EVERY_S = 0.5


class LoadGovernor:
    """Sheds and restores work for a set of streams sharing one engine (module docstring)."""

    def __init__(self, cfg: LoadConfig, pipelines: Sequence[Pipeline], engine: Engine) -> None:
        self.cfg = cfg
        self.pipelines = list(pipelines)
        self.engine = engine
        self.level = 0  # steps of cfg.degrade in force
        self.max_level = 0  # the most ever in force (for the session's metadata and the bench)
        self._changed = -float("inf")
        self._calm_since: float | None = None

    @property
    def shed(self) -> list[str]:
        return list(self.cfg.degrade[: self.level])

    def lag_s(self) -> float:
        running = [p for p in self.pipelines if not p.finished]
        return max((p.behind_s() for p in running), default=0.0)

    async def run(self) -> None:
        """Every ``EVERY_S`` until cancelled."""
        while True:
            await asyncio.sleep(EVERY_S)
            self.step(self.lag_s(), time.monotonic())

    def step(self, lag_s: float, now: float) -> None:
        """One decision on the worst lag ``lag_s`` at time ``now`` (monotonic seconds)."""
        cfg = self.cfg
        if lag_s >= cfg.behind_high_s:
            self._calm_since = None
            if self.level < len(cfg.degrade) and now - self._changed >= HOLD_S:
                self._set(self.level + 1, now)
                log.warning("streams lag %.1f s behind real time: shedding %s", lag_s, cfg.degrade[self.level - 1])
        elif lag_s < cfg.behind_low_s:
            if self._calm_since is None:
                self._calm_since = now
            elif self.level > 0 and now - self._calm_since >= cfg.recover_s:
                log.info("streams keep up again: %s back", cfg.degrade[self.level - 1])
                self._set(self.level - 1, now)
                self._calm_since = now
        else:
            self._calm_since = None

    def _set(self, level: int, now: float) -> None:
        self.level, self._changed = level, now
        self.max_level = max(self.max_level, level)
        shed = self.shed
        base = self.engine.faces_per_window
        self.engine.frames_per_window = (min(self.cfg.faces_degraded, base or self.cfg.faces_degraded)
                                         if "faces" in shed else base)
        self.engine.vision = "vision" not in shed
        for p in self.pipelines:
            p.shed(shed)

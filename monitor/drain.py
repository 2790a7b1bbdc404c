"""The end of a session's delivery: how long an output may still try (``drain_timeout_s``), and awaiting within it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

GRACE_S = 0.5
"""A send under way when the drain time runs out: how long it may still take to be acknowledged (a healthy
broker's acknowledgement is then not thrown away: that message would be sent twice)."""


class Drain:
    """Unset while the session runs; :meth:`start` fixes the deadline when it ends."""

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._started: asyncio.Future[None] | None = None  # done at start (one future, awaited beside every send)

    def _start_future(self) -> asyncio.Future[None]:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
        return self._started

    def start(self, seconds: float) -> None:
        self._deadline = asyncio.get_running_loop().time() + seconds
        started = self._start_future()
        if not started.done():
            started.set_result(None)

    def left(self) -> float | None:
        """Seconds left (0 or less: over); None while the session runs."""
        return None if self._deadline is None else self._deadline - asyncio.get_running_loop().time()

    def over(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    async def within(self, send: Awaitable[Any]) -> bool:
        """Await ``send`` (a publish and its acknowledgement); False, and it is abandoned, if the drain time runs out
        first, also when the session ends while it waits (a broker that stopped acknowledging holds nobody longer than
        the drain); a send under way then gets ``GRACE_S`` at least. Its exceptions propagate."""
        task = asyncio.ensure_future(send)
        try:
            if self._deadline is None:
                await asyncio.wait({task, self._start_future()}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=max(self.left() or 0.0, GRACE_S))
            if not task.done():
                return False
            task.result()
            return True
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

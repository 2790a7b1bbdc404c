"""The Source interface: everything that produces media (webcam, microphone, network camera, replay).

A source is started, iterated, and stopped; the pipeline never knows which kind it has::

    await source.start()                 # open the device or the file (SourceError: one clear line)
    async for item in source:            # AudioChunk | VideoFrame | StateChange, in time order
        ...
    source.stop()                        # idempotent, from any thread; the iteration then ends

What the pipeline may ask of a source (:class:`Source`): its ``label``; the ``kinds`` of media it
yields (``audio``, ``video``); whether it is ``live`` (a device: it delivers in real time and drops
its oldest items when the pipeline lags, counted in ``dropped``) or a recording (it waits for the
pipeline and never loses anything); whether it is ``paced`` (real time: a device or a replay that
follows media timestamps) or as fast as it is read (``--fast``); and its ``state``. State changes
(a camera lost and back, the end of a file) are also yielded in order as :class:`StateChange` items,
so the pipeline reports them where they happened in the stream.

Device threads stay behind the interface: :class:`DeviceSource` is the base of the camera and the
microphone; their threads ``offer`` items into a bounded :class:`~mmsa.monitor.channels.Channel`
(newest wins) that the async iteration drains. Times are session seconds (:class:`SessionClock`).
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .channels import Channel, ChannelClosed
from .frames import AudioChunk, VideoFrame, VideoMark

AUDIO = "audio"
VIDEO = "video"


class SourceState(str, enum.Enum):
    STARTING = "starting"
    LIVE = "live"  # delivering (a device, or a replay in progress)
    LOST = "lost"  # a device stopped delivering; it is retried
    ENDED = "ended"  # stopped, or the recording is over


@dataclass(frozen=True)
class StateChange:
    """A source's state changed at this point of its stream."""

    source: str  # the source's label
    state: SourceState
    message: str = ""
    kind: str | None = None  # the one kind of media it concerns (a replay's video ends before its audio); None: all


MediaItem = AudioChunk | VideoFrame | VideoMark | StateChange
"""What a source yields. ``VideoMark``: a recording's video has no frame before its time left to deliver (replays)."""


@runtime_checkable
class Source(Protocol):
    """What produces media for one stream (see the module docstring)."""

    label: str
    kinds: frozenset[str]
    live: bool
    paced: bool
    state: SourceState

    @property
    def dropped(self) -> int: ...

    async def start(self) -> None: ...

    def stop(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[MediaItem]: ...


class SessionClock:
    """Seconds since the session started; the first reading (the first frame or audio block) is 0."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now = time.monotonic()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            return now - self._t0


class DeviceSource:
    """Base of the live sources: a device thread hands items over through a bounded channel.

    Subclasses implement :meth:`open` (blocking; raise SourceError), :meth:`_start_device` and
    :meth:`_stop_device`, and call :meth:`_emit` / :meth:`_set_state` from their thread. The
    channel keeps at most ``capacity`` units (``size_of``: items by default); beyond that the
    oldest items are dropped and counted (:attr:`dropped`), state changes never.
    """

    label = "device"
    kinds: frozenset[str] = frozenset()
    live = True
    paced = True

    def __init__(self, capacity: int, size_of: Callable[[object], int] | None = None) -> None:
        self.state = SourceState.STARTING
        self._capacity = max(1, capacity)
        self._size_of = size_of
        self.buffer: Channel[MediaItem] | None = None
        self._stopped = False

    @property
    def dropped(self) -> int:
        return 0 if self.buffer is None else self.buffer.dropped

    def _size(self, item: MediaItem) -> int:
        """Capacity units of an item; a state change takes none (it is never dropped either)."""
        if isinstance(item, StateChange):
            return 0
        return 1 if self._size_of is None else self._size_of(item)

    def open(self) -> None:  # pragma: no cover - every device overrides it
        """Open the device now (blocking); raise SourceError with one clear line if it is not there."""

    def _start_device(self) -> None:  # pragma: no cover - every device overrides it
        raise NotImplementedError

    def _stop_device(self) -> None:  # pragma: no cover - every device overrides it
        raise NotImplementedError

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.buffer = Channel(self.label, self._capacity, loop, size_of=self._size)
        await asyncio.to_thread(self._start_device)
        self.state = SourceState.LIVE

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop_device()
        self.state = SourceState.ENDED
        if self.buffer is not None:
            self.buffer.close()

    def _emit(self, item: AudioChunk | VideoFrame) -> None:
        if self.buffer is not None:
            self.buffer.offer(item)

    def _set_state(self, state: SourceState, message: str = "") -> None:
        self.state = state
        if self.buffer is not None:
            self.buffer.offer(StateChange(self.label, state, message), droppable=False)

    async def __aiter__(self) -> AsyncIterator[MediaItem]:
        if self.buffer is None:
            raise RuntimeError(f"{self.label}: iterated before start()")
        while True:
            try:
                yield await self.buffer.get()
            except ChannelClosed:
                return

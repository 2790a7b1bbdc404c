"""Bounded queues between pipeline stages, with an explicit overflow policy and a drop counter.

A :class:`Channel` connects producers (device threads or tasks) to one consumer task:

* ``offer(item)`` never blocks and may be called from any thread. When the channel is full
  the *oldest* items are dropped and counted: live devices cannot wait, and for frames and
  audio the newest data is the most useful. An item offered with ``droppable=False`` (a
  source's state change) is never dropped: eviction passes over it. At most one wake-up callback is pending on the
  event loop at any time, so a stalled loop cannot pile up callbacks either.
* ``await put(item)`` waits for room instead (backpressure): replay sources use it, so a
  replay never loses data however slow the consumer.
* ``await get()`` returns the next item, or raises :class:`ChannelClosed` once the channel
  is closed and drained.

Capacity is counted in items or, with ``size_of``, in any unit (audio: samples).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """The channel was closed and every item has been taken."""


class Channel(Generic[T]):
    def __init__(
        self,
        name: str,
        capacity: int,
        loop: asyncio.AbstractEventLoop | None = None,
        size_of: Callable[[T], int] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"channel {name}: capacity must be >= 1")
        self.name = name
        self.capacity = capacity
        self.dropped = 0  # items dropped by offer() because the channel was full
        self.high_water = 0  # largest size reached
        self._size_of = size_of or (lambda _item: 1)
        self._items: deque[tuple[T, int, bool]] = deque()  # item, size, droppable
        self._size = 0
        self._lock = threading.Lock()
        self._loop = loop or asyncio.get_running_loop()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._wake_pending = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Current content in capacity units."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, item: T, droppable: bool = True) -> bool:
        """Add without waiting, from any thread; drop the oldest droppable items if full. False once closed."""
        size = self._size_of(item)
        with self._lock:
            if self._closed:
                return False
            self._items.append((item, size, droppable))
            self._size += size
            if self._size > self.capacity:
                self._evict()
            self.high_water = max(self.high_water, self._size)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._call_in_loop(self._wake)
        return True

    def _evict(self) -> None:
        """Drop the oldest droppable items (never the newest) until the content fits (lock held)."""
        kept: list[tuple[T, int, bool]] = []
        while self._size > self.capacity and len(self._items) > 1:
            entry = self._items.popleft()
            if not entry[2]:
                kept.append(entry)
                continue
            self._size -= entry[1]
            self.dropped += 1
        self._items.extendleft(reversed(kept))

    async def put(self, item: T) -> None:
        """Add, waiting for room (in the loop's thread). Raises ChannelClosed if closed meanwhile."""
        size = self._size_of(item)
        while True:
            with self._lock:
                if self._closed:
                    raise ChannelClosed(self.name)
                if self._size == 0 or self._size + size <= self.capacity:
                    self._items.append((item, size, True))
                    self._size += size
                    self.high_water = max(self.high_water, self._size)
                    break
                self._writable.clear()
            await self._writable.wait()
        self._readable.set()

    async def get(self) -> T:
        """Next item (oldest first); ChannelClosed once closed and empty."""
        while True:
            with self._lock:
                self._wake_pending = False
                if self._items:
                    item, size, _ = self._items.popleft()
                    self._size -= size
                    if not self._items:
                        self._readable.clear()
                    break
                if self._closed:
                    raise ChannelClosed(self.name)
                self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return item

    async def get_unless(self, event: asyncio.Event) -> T | None:
        """The next item, or None if ``event`` is set first (it is left set); ChannelClosed once closed and drained."""
        getting = asyncio.ensure_future(self.get())
        waiting = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({getting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not getting.done():
                getting.cancel()  # get() takes nothing until it returns
            await asyncio.gather(getting, waiting, return_exceptions=True)
        if getting.done() and not getting.cancelled():
            return getting.result()  # raises ChannelClosed once closed and drained
        return None

    def get_nowait(self) -> T | None:
        """Next item if one is waiting, else None (never raises)."""
        with self._lock:
            if not self._items:
                return None
            item, size, _ = self._items.popleft()
            self._size -= size
        self._writable.set()
        return item

    def peek_oldest(self) -> list[T]:
        """The oldest item waiting, in a list (empty when none waits); it stays in the channel."""
        with self._lock:
            return [self._items[0][0]] if self._items else []

    def close(self) -> None:
        """No more items (callable from any thread); the consumer drains what is left."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._call_in_loop(self._wake_all)

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def _wake(self) -> None:
        self._readable.set()

    def _wake_all(self) -> None:
        self._readable.set()
        self._writable.set()

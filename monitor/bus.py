"""The event bus and the Sink interface: everything that consumes ScoreEvents, partials and status.

One :class:`EventBus` per stream fans each published item out to its sinks; every sink declares
how it survives a burst it cannot keep up with (:class:`Overflow`):

* ``DURABLE``: lossless through a store of the sink's own. The bus calls :meth:`Sink.accept`
  synchronously inside :meth:`EventBus.publish`, in the order the sinks were attached, before any
  queued subscriber sees the item; ``accept`` stores it (the JSONL session log appends the line,
  MQTT appends to its on-disk outbox) and the sink's task delivers it later. The session log is
  attached first, so a result is on disk before anything else can see it.
* ``DROP_OLDEST``: a bounded :class:`Feed` of ``capacity`` items. When it is full the oldest
  event or partial is dropped and counted; status snapshots coalesce (a feed holds at most one,
  the latest), so a stalled subscriber never grows memory without limit (the dashboard, the
  terminal printer, the Prometheus exporter).

Sinks that take media (the recorder) also get every audio chunk and kept frame through
:meth:`EventBus.media`; they bound their own queues. Drop counts come back through
:meth:`Sink.drops` and the feeds' counters (:meth:`EventBus.drops`), never through side channels.

A sink that raises (in :meth:`Sink.accept` or its task, :meth:`EventBus.run_sink`) fails alone: the bus
detaches it, says so in the status (``message``, and ``degraded`` gains ``<name> failed``) and the stream
goes on with the others (a full disk under the session log still leaves MQTT and the dashboard; a broken
terminal pipe leaves the log); :attr:`EventBus.failed` keeps why, for the exit line.

Adding a sink is one module with a :class:`Sink` subclass plus one line in ``sinks.SINKS``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .events import MonitorStatus, PartialScore, ScoreEvent

if TYPE_CHECKING:  # the bus itself never touches media (and so needs no numpy: ``watch`` imports it)
    from .frames import AudioChunk, VideoFrame

log = logging.getLogger(__name__)

BusItem = ScoreEvent | MonitorStatus | PartialScore
FEED_CAPACITY = 1024  # events waiting for a DROP_OLDEST subscriber (a few KB each)


class Overflow(str, enum.Enum):
    DURABLE = "durable"  # accept() stores every item; lossless
    DROP_OLDEST = "drop-oldest"  # a bounded feed; the oldest items are dropped and counted


class Feed:
    """A subscriber's bounded queue: ``await get()`` returns the next item, or None once the bus closed.

    Holds at most ``capacity`` events and partials (the oldest dropped and counted in ``dropped``)
    plus at most one status snapshot (a newer one replaces it where it waits).
    """

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self.capacity = max(1, capacity)
        self.dropped = 0
        self._items: deque[BusItem] = deque()
        self._n_status = 0
        self._ended = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._ended

    def push(self, item: BusItem) -> None:
        if self._ended:
            return
        if isinstance(item, MonitorStatus):
            if self._n_status:
                self._items = deque(x for x in self._items if not isinstance(x, MonitorStatus))
            self._n_status = 1
        elif len(self._items) - self._n_status >= self.capacity:
            self._drop_oldest_event()
        self._items.append(item)
        self._ready.set()

    def _drop_oldest_event(self) -> None:
        for i, x in enumerate(self._items):
            if not isinstance(x, MonitorStatus):
                del self._items[i]
                self.dropped += 1
                return

    def end(self) -> None:
        self._ended = True
        self._ready.set()

    def get_nowait(self) -> BusItem | None:
        """The next item if one waits, else None (also at the end)."""
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, MonitorStatus):
            self._n_status = 0
        return item

    async def get(self) -> BusItem | None:
        while not self._items:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self.get_nowait()


class Sink:
    """Base of everything that consumes a stream's output (module docstring).

    ``overflow`` is the policy; a ``DURABLE`` sink implements :meth:`accept`; every sink gets a
    :class:`Feed` when attached (for a ``DURABLE`` sink it carries only the status snapshots and
    the end) and :meth:`run` consumes it until the bus closes. ``takes_media`` sinks also get
    :meth:`media` calls (must not block).
    """

    name: ClassVar[str] = "sink"
    overflow: ClassVar[Overflow] = Overflow.DROP_OLDEST
    capacity: ClassVar[int] = FEED_CAPACITY
    takes_media: ClassVar[bool] = False
    feed: Feed | None = None

    def attach(self, bus: EventBus) -> None:
        """Register with the stream's bus (once)."""
        if self.feed is None:
            self.feed = bus.attach(self)

    def accept(self, item: BusItem) -> None:
        """DURABLE sinks: store the item now (called inside publish; must be quick)."""

    def media(self, item: AudioChunk | VideoFrame) -> None:
        """``takes_media`` sinks: one chunk or kept frame (must not block)."""

    async def run(self) -> None:
        """Consume the feed until the bus closes (default: handle each item with :meth:`handle`)."""
        assert self.feed is not None, f"sink {self.name} was never attached to a bus"
        while (item := await self.feed.get()) is not None:
            self.handle(item)

    async def closed(self) -> None:
        """Wait until the bus closed (DURABLE and media sinks: their items come another way)."""
        assert self.feed is not None, f"sink {self.name} was never attached to a bus"
        while await self.feed.get() is not None:
            pass

    def handle(self, item: BusItem) -> None:
        """One item of the feed (DROP_OLDEST sinks that keep the default :meth:`run`)."""

    def drops(self) -> dict[str, int]:
        """Items this sink lost so far, by reason (only non-zero counts)."""
        return {}

    def release(self) -> None:
        """Its stream failed while being set up, so :meth:`run` (which closes what the sink opened once the bus
        closes) will never run: close it now (the session log's file, MQTT's outbox). Default: nothing to close."""


class EventBus:
    """Fan-out of one stream's ScoreEvents, partials and status snapshots to its sinks (module docstring)."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._feeds: list[tuple[str, Feed, bool]] = []  # name, feed, status only (a DURABLE sink's)
        self.last_status = MonitorStatus()
        self.closed = False
        self.failed: dict[str, str] = {}  # sinks that raised: name -> why (the stream went on without them)
        self.shed: list[str] = []  # work shed under load (``Pipeline.shed``): ``degraded`` with the failed sinks
        self.stop_hooks: list[Callable[[], None]] = []  # ask the stream to stop cleanly (the pipeline's request_stop)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks attached now, in order."""
        return tuple(self._sinks)

    def attach(self, sink: Sink) -> Feed:
        """Register a sink; returns its feed (holding the current status snapshot)."""
        self._sinks.append(sink)
        return self._new_feed(sink.name, sink.capacity, status_only=sink.overflow is Overflow.DURABLE)

    def subscribe(self, capacity: int = FEED_CAPACITY, name: str = "subscriber") -> Feed:
        """A bare DROP_OLDEST feed receiving every item published from now on (the dashboard's)."""
        return self._new_feed(name, capacity, status_only=False)

    def _new_feed(self, name: str, capacity: int, *, status_only: bool) -> Feed:
        feed = Feed(capacity)
        feed.push(self.last_status)
        if self.closed:
            feed.end()
        else:
            self._feeds.append((name, feed, status_only))
        return feed

    def unsubscribe(self, feed: Feed) -> None:
        self._feeds = [x for x in self._feeds if x[1] is not feed]

    def detach(self, sink: Sink) -> None:
        """Stop feeding a sink; its feed ends (its run returns)."""
        self._sinks = [s for s in self._sinks if s is not sink]
        feed = getattr(sink, "feed", None)
        if feed is not None:
            self.unsubscribe(feed)
            feed.end()

    def publish(self, item: BusItem) -> None:
        status = isinstance(item, MonitorStatus)
        if status:
            self.last_status = item
        for sink in [s for s in self._sinks if s.overflow is Overflow.DURABLE]:
            try:
                sink.accept(item)
            except Exception as exc:  # noqa: BLE001 - one output failing must not stop the others
                self.fail(sink, exc)
        for _, feed, status_only in self._feeds:
            if status or not status_only:
                feed.push(item)

    async def run_sink(self, sink: Sink) -> None:
        """``sink.run()``, the sink's task: if it raises, the sink fails alone (:meth:`fail`)."""
        try:
            await sink.run()
        except Exception as exc:  # noqa: BLE001 - one output failing must not stop the others
            self.fail(sink, exc)

    def fail(self, sink: Sink, exc: BaseException) -> None:
        """``sink`` raised: detach it and go on without it; the status says so (the first failure of each sink)."""
        self.detach(sink)
        if sink.name in self.failed:
            return
        why = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
        self.failed[sink.name] = why
        log.error("the %s output failed (%s); the stream goes on without it", sink.name, why, exc_info=exc)
        if not self.closed:
            self.update_status(message=f"{sink.name} failed: {why}", degraded=self.degraded())

    def degraded(self) -> list[str]:
        """The status's ``degraded``: work shed under load, then the sinks that failed."""
        return [*self.shed, *(f"{name} failed" for name in self.failed)]

    def request_stop(self) -> None:
        """Ask the stream to stop cleanly (a sink whose reader went away: the terminal printer's closed pipe)."""
        for hook in self.stop_hooks:
            hook()

    def media(self, item: AudioChunk | VideoFrame) -> None:
        for sink in self._sinks:
            if sink.takes_media:
                sink.media(item)

    def update_status(self, **kw: Any) -> MonitorStatus:
        """Publish a status snapshot with some fields changed."""
        status = self.last_status.replace(**kw)
        self.publish(status)
        return status

    def drops(self) -> dict[str, int]:
        """Items lost so far: by slow subscribers (``<name>_feed``) and by the sinks themselves."""
        out: dict[str, int] = {}
        for name, feed, _ in self._feeds:
            if feed.dropped:
                out[f"{name}_feed"] = out.get(f"{name}_feed", 0) + feed.dropped
        for sink in self._sinks:
            out.update(sink.drops())
        return out

    def close(self) -> None:
        """Tell every subscriber that the session ended."""
        self.closed = True
        for _, feed, _ in self._feeds:
            feed.end()

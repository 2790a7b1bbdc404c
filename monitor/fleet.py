"""Many streams in one view: the feed protocol, per-stream state, and the sans-IO MQTT fleet model.

**Topics** (docs/fleet.md). A topic parses as ``<root>/<node>/<leaf>`` (a single-stream
monitor) or ``<root>/<node>/<stream>/<leaf>`` (one stream of a multi-stream monitor), with
``leaf`` one of :data:`LEAVES` and ``root`` ``mmsa-monitor`` unless ``watch --prefix`` says
otherwise; anything else is ignored. ``status`` is ``online``/``offline`` (retained; ``offline``
is also the Last Will), ``score`` every ScoreEvent, ``partial`` the open utterance's
PartialScore, ``state`` the latest ScoreEvent (retained: a late watcher gets each stream's
latest score at once), ``health`` the stream's MonitorStatus as JSON (:func:`health_to_json`,
retained, at most every 2 s).

**The feed** (:class:`Feed`) is what the fleet app (:class:`mmsa.monitor.fleetview.FleetApp`)
consumes: an async iterable of ``(StreamKey, item)`` pairs, ``item`` one of
:data:`FeedItem` (ScoreEvent, PartialScore, MonitorStatus, Presence), plus ``(None,
FeedStatus)`` for news of the feed itself (the broker connection). The iteration ending means
the feed is over. Two producers exist:

* ``mmsa-monitor watch`` (:mod:`mmsa.monitor.watch`): an MQTT subscriber puts every message
  through :meth:`FleetModel.apply` and the pairs it returns into a :class:`FeedQueue`.
* the local multi-stream monitor: one task per stream's EventBus subscription puts
  ``(key, Presence(True, time.time()))`` when the stream starts, every bus item as it comes
  (ScoreEvent, PartialScore, MonitorStatus), and ``(key, Presence(False, time.time()))`` when
  the bus ends (``None``); :meth:`FeedQueue.close` when every stream is done.

:class:`StreamState` is one stream as a view knows it (the fleet model and the fleet app each
keep their own); it drops duplicates, so the retained ``state`` of an event already seen
changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .events import MonitorStatus, PartialScore, ScoreEvent

log = logging.getLogger(__name__)

DEFAULT_ROOT = "mmsa-monitor"
LEAVES = ("status", "score", "partial", "state", "health")
HEALTH_SCHEMA = 1
STREAM_HISTORY_MAX = 200  # ScoreEvents kept per stream: the stream view's 3-minute timeline at one utterance/s
FEED_QUEUE_MAX = 10_000  # feed items waiting for the app; beyond it the oldest is dropped (counted)


@dataclass(frozen=True, order=True)
class StreamKey:
    """A stream of the fleet: its node and, for a multi-stream monitor, its name (``""`` otherwise)."""

    node: str
    stream: str = ""

    @property
    def label(self) -> str:
        return f"{self.node}/{self.stream}" if self.stream else self.node


@dataclass(frozen=True)
class Presence:
    """A stream went online or offline (its ``status`` topic; ``offline`` is also its Last Will).

    ``since``: ``time.time()`` when the change was seen; ``None`` when it was learned from a
    retained message, which says nothing about when it happened.
    """

    online: bool
    since: float | None = None


@dataclass(frozen=True)
class FeedStatus:
    """News of the feed itself (``watch``: the broker connection), for the fleet's status line."""

    text: str
    ok: bool = True


FeedItem = ScoreEvent | PartialScore | MonitorStatus | Presence


class Feed(Protocol):
    """What the fleet app consumes: ``async for key, item in feed`` (see the module docstring)."""

    def __aiter__(self) -> AsyncIterator[tuple[StreamKey | None, FeedItem | FeedStatus]]: ...


class FeedQueue:
    """A :class:`Feed` that producers fill with :meth:`put` (never blocks) and end with :meth:`close`.

    Bounded at ``maxsize`` items: a producer faster than the app drops the oldest waiting item,
    counted in ``n_dropped`` (the fleet status line shows it). Use it from the event loop's thread.
    """

    _END = object()

    def __init__(self, maxsize: int = FEED_QUEUE_MAX) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.n_dropped = 0
        self.closed = False

    def put(self, key: StreamKey | None, item: FeedItem | FeedStatus) -> None:
        self._put((key, item))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._put(self._END)

    def _put(self, entry: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.n_dropped += 1
        self._queue.put_nowait(entry)

    async def __aiter__(self) -> AsyncIterator[tuple[StreamKey | None, FeedItem | FeedStatus]]:
        while (entry := await self._queue.get()) is not self._END:
            yield entry


# --------------------------------------------------------------------------- health


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


# key -> (accepts the JSON value?, default when missing or malformed)
_HEALTH: dict[str, tuple[Any, Any]] = {
    "stream": (_is_str, ""), "source": (_is_str, ""), "camera": (_is_str, "off"), "mic": (_is_str, "off"),
    "mqtt": (_is_str, "off"), "model": (_is_str, ""), "device": (_is_str, ""), "message": (_is_str, ""),
    "drops": (lambda v: isinstance(v, dict), {}), "errors": (_is_count, 0),
    "latency_p50_ms": (lambda v: v is None or _is_num(v), None),
    "latency_p95_ms": (lambda v: v is None or _is_num(v), None),
    "n_events": (_is_count, 0), "behind_s": (_is_num, 0.0),
    "degraded": (lambda v: isinstance(v, list), []), "finished": (lambda v: isinstance(v, bool), False),
}


def health_to_json(status: MonitorStatus) -> str:
    """A stream's health for ``<prefix>/health`` (schema 1; the keys of docs/fleet.md, in that order)."""
    d = {
        "schema": HEALTH_SCHEMA,
        "stream": status.stream,
        "source": status.source, "camera": status.camera, "mic": status.mic, "mqtt": status.mqtt,
        "model": status.model, "device": status.device,
        "drops": {str(k): int(v) for k, v in status.drops.items()},
        "errors": int(status.errors),
        "latency_p50_ms": None if status.latency_p50_ms is None else round(float(status.latency_p50_ms), 1),
        "latency_p95_ms": None if status.latency_p95_ms is None else round(float(status.latency_p95_ms), 1),
        "n_events": status.n_events,
        "behind_s": round(float(status.behind_s), 3),
        "degraded": [str(x) for x in status.degraded],
        "message": status.message,
        "finished": status.finished,
    }
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def health_from_json(payload: str | bytes) -> MonitorStatus:
    """The MonitorStatus in a ``health`` payload; raises ValueError only when it is not a JSON object.

    Tolerant by design (monitors of other versions share a broker): unknown keys are ignored,
    a missing or malformed key takes its default, ``drops`` keeps its integer entries and
    ``degraded`` its strings.
    """
    try:
        d = json.loads(payload)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"health is not JSON ({exc})") from exc
    if not isinstance(d, dict):
        raise ValueError("health is not a JSON object")
    values = {k: d[k] if k in d and ok(d[k]) else default for k, (ok, default) in _HEALTH.items()}
    values["drops"] = {str(k): v for k, v in values["drops"].items() if _is_count(v)}
    values["degraded"] = [x for x in values["degraded"] if isinstance(x, str)]
    return MonitorStatus(**values)


# --------------------------------------------------------------------------- one stream


def wall_time_s(event: ScoreEvent) -> float | None:
    """The event's ``wall_time`` as ``time.time()`` seconds (None if unreadable)."""
    try:
        return datetime.fromisoformat(event.wall_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class StreamState:
    """One stream as a view knows it: presence, latest score, open partial, health, recent events.

    ``history`` holds the newest ``STREAM_HISTORY_MAX`` ScoreEvents of the stream's current
    session: when a ScoreEvent of another session arrives (the monitor restarted) it starts
    again, since session times restart at zero. ``n_events`` counts the ScoreEvents received.
    """

    key: StreamKey
    online: bool | None = None  # None: unknown (no status seen yet)
    since: float | None = None  # see Presence.since
    latest: ScoreEvent | None = None
    partial: ScoreEvent | None = None
    health: MonitorStatus | None = None
    n_events: int = 0
    history: deque[ScoreEvent] = field(default_factory=lambda: deque(maxlen=STREAM_HISTORY_MAX))

    @property
    def presence(self) -> str:
        return "unknown" if self.online is None else "online" if self.online else "offline"

    @property
    def last_seen(self) -> float | None:
        """``time.time()`` of the newest sign of the stream: its latest score or a status change seen live."""
        times = [t for t in (self.since, self.latest and wall_time_s(self.latest)) if t is not None]
        return max(times) if times else None

    def apply(self, item: FeedItem) -> bool:
        """Take one item; False when it changes nothing (a duplicate or stale event, a repeated status)."""
        if isinstance(item, ScoreEvent):
            return self._event(item)
        if isinstance(item, PartialScore):
            if self._stale(item.event):
                return False
            self.partial = item.event
        elif isinstance(item, MonitorStatus):
            self.health = item
        elif isinstance(item, Presence):
            if item.online == self.online and (item.since is None or self.since is not None):
                return False
            self.online, self.since = item.online, item.since
            if not item.online:
                self.partial = None  # nobody is speaking on a stream that went away
        else:
            raise TypeError(f"not a feed item: {type(item).__name__}")
        return True

    def _stale(self, event: ScoreEvent) -> bool:
        latest = self.latest
        return latest is not None and event.session == latest.session and event.seq <= latest.seq

    def _event(self, event: ScoreEvent) -> bool:
        if self._stale(event):
            return False
        if self.latest is None or event.session != self.latest.session:
            self.history.clear()
        self.latest = event
        self.history.append(event)
        self.n_events += 1
        if self.partial is not None and (self.partial.session != event.session or self.partial.seq <= event.seq):
            self.partial = None
        return True


# --------------------------------------------------------------------------- MQTT


def parse_topic(topic: str, root: str = DEFAULT_ROOT) -> tuple[StreamKey, str] | None:
    """``<root>/<node>[/<stream>]/<leaf>`` -> (StreamKey, leaf); None for any other topic."""
    head = root.strip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) not in (2, 3) or parts[-1] not in LEAVES or not all(parts[:-1]):
        return None
    return StreamKey(*parts[:-1]), parts[-1]


class FleetModel:
    """Every stream on a broker, from its MQTT messages (sans-IO: no network, tested with payloads).

    Bad payloads (a ScoreEvent that breaks the contract, a status that is neither ``online`` nor
    ``offline``, health that is not a JSON object) are counted in ``n_bad``, described in
    ``last_error`` and ignored; topics outside the layout are counted in ``n_ignored``; an empty
    payload (a retained message being cleared) changes nothing.
    """

    def __init__(self, root: str = DEFAULT_ROOT, clock=time.time) -> None:
        self.root = root.strip("/")
        self.clock = clock
        self.streams: dict[StreamKey, StreamState] = {}
        self.n_bad = 0
        self.n_ignored = 0
        self.last_error = ""

    def apply(self, topic: str, payload: bytes, retained: bool = False) -> tuple[StreamKey, FeedItem] | None:
        """Take one message; return ``(stream, item)`` when it changed that stream, else None."""
        parsed = parse_topic(topic, self.root)
        if parsed is None:
            self.n_ignored += 1
            return None
        key, leaf = parsed
        if not payload:
            return None
        try:
            item = self._decode(leaf, payload, retained)
        except (ValueError, TypeError, RecursionError) as exc:  # whatever a stranger publishes
            self.n_bad += 1
            self.last_error = f"{key.label} {leaf}: {str(exc)[:200]}"
            log.debug("fleet: ignoring %s: %s", topic, exc)
            return None
        state = self.streams.get(key)
        if state is None:
            state = self.streams[key] = StreamState(key)
        return (key, item) if state.apply(item) else None

    def _decode(self, leaf: str, payload: bytes, retained: bool) -> FeedItem:
        if leaf == "status":
            word = payload.strip()
            if word not in (b"online", b"offline"):
                raise ValueError(f"status {payload[:40]!r} is neither online nor offline")
            return Presence(word == b"online", None if retained else self.clock())
        if leaf == "health":
            return health_from_json(payload)
        event = ScoreEvent.from_json(payload)
        return PartialScore(event) if leaf == "partial" else event

"""Several streams in one process: which streams (``--stream``, ``[[streams]]``, a folder of recordings),
and running them together on one engine.

``mmsa-monitor --stream desk=0,mic=1 --stream door=rtsp://cam/door,mic=2 --stream talk=runs/talk``:
each ``--stream NAME=SOURCE[,mic=DEVICE][,record=DIR]`` is one stream, SOURCE a camera index, a
camera URL (``scheme://``), ``mic`` alone (a microphone-only stream; its device in ``mic=``), or a
path (a video or audio file, or a recorded session folder, replayed). ``[[streams]]`` tables in the
config say the same (:class:`~mmsa.monitor.config.StreamConfig`). ``--replay FOLDER`` where FOLDER
holds recordings (session folders, media files) replays each as its own stream.

Every stream has its own sources, segmenter, session folder (``runs/sessions/<time>-<id>-<name>``),
JSONL log, MQTT connection (``mmsa-monitor/<node_id>/<name>/...``, its own Last Will and Home
Assistant entity) and bus; Whisper, the featurizer and the fusion model are shared (``engine.py``)
and the scorer batches across streams. :func:`run_streams` runs them in one TaskGroup with the
engine and the load governor (``load.py``); a stream that fails is reported and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from mmsa.common.errors import ConfigError, MMSAError

from .config import LoadConfig, StreamConfig
from .engine import Engine
from .fleet import FeedQueue, Presence, StreamKey
from .load import LoadGovernor
from .replay import is_session_folder
from .stream import CURRENT_STREAM, Stream

try:
    from asyncio import TaskGroup
except ImportError:  # Python 3.10
    from taskgroup import TaskGroup  # type: ignore[no-redef]

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus"}
STREAM_SYNTAX = "NAME=SOURCE[,mic=DEVICE][,record=DIR] (SOURCE: a camera index or URL, mic, or a file or session folder)"


def parse_stream(text: str) -> StreamConfig:
    """``--stream NAME=SOURCE[,mic=DEVICE][,record=DIR]`` -> a StreamConfig (ConfigError naming the problem)."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ConfigError(f"--stream {text!r}: expected {STREAM_SYNTAX}")
    source, *options = rest.split(",")
    kw: dict[str, str] = {}
    for opt in options:
        key, eq, value = opt.partition("=")
        if key not in ("mic", "record") or not eq or not value:
            raise ConfigError(f"--stream {text!r}: unknown option {opt!r} (options: mic=DEVICE, record=DIR)")
        kw[key] = value
    if source.isdigit() or "://" in source:
        kw["camera"] = source
    elif source != "mic":
        kw["replay"] = source
    try:
        return StreamConfig(name.strip(), **kw)
    except ValueError as exc:
        raise ConfigError(f"--stream {text!r}: {exc}") from exc


def is_recordings_folder(path: str | Path) -> bool:
    """A folder to replay as many streams: not itself a session folder."""
    p = Path(path).expanduser()
    return p.is_dir() and not is_session_folder(p)


def folder_streams(folder: str | Path) -> list[StreamConfig]:
    """One stream per recording in ``folder`` (session folders and media files), named after it."""
    folder = Path(folder).expanduser()
    entries = sorted((p for p in folder.iterdir()
                      if (p.is_dir() and is_session_folder(p)) or (p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)),
                     key=lambda p: p.name.lower())
    if not entries:
        raise ConfigError(f"{folder}: no recordings to replay (session folders or media files)")
    streams: list[StreamConfig] = []
    used: set[str] = set()
    for p in entries:
        base = re.sub(r"[^a-z0-9_-]+", "-", p.stem.lower()).strip("-") or "stream"
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        streams.append(StreamConfig(name, replay=str(p)))
    return streams


def check_unique(streams: Sequence[StreamConfig]) -> None:
    seen: set[str] = set()
    for s in streams:
        if s.name in seen:
            raise ConfigError(f"stream {s.name!r} is named twice (each stream needs its own name)")
        seen.add(s.name)


class StreamsControl:
    """What the dashboard may ask of several streams: stop them all (``q``); recording is per stream."""

    def __init__(self, streams: Sequence[Stream]) -> None:
        self.streams = list(streams)

    def request_stop(self) -> None:
        for s in self.streams:
            s.pipeline.request_stop()

    def toggle_recording(self) -> bool:
        raise MMSAError("recording is chosen per stream when it starts (--stream NAME=SOURCE,record=DIR)")


async def _follow(stream: Stream, key: StreamKey, feed: FeedQueue) -> None:
    """One stream's bus into the fleet view's feed (the local counterpart of ``watch``'s MQTT subscriber)."""
    sub = stream.bus.subscribe(name="fleet")
    feed.put(key, Presence(True, time.time()))
    while (item := await sub.get()) is not None:
        feed.put(key, item)
    feed.put(key, Presence(False, time.time()))


def local_feed(streams: Sequence[Stream], node: str, tg: TaskGroup) -> FeedQueue:
    """A fleet-view feed of the in-process streams (closed once every stream has ended)."""
    feed = FeedQueue()
    follows = [tg.create_task(_follow(s, StreamKey(node, s.name), feed), name=f"feed-{s.name}") for s in streams]

    async def close_when_done() -> None:
        await asyncio.gather(*follows)
        feed.close()

    tg.create_task(close_when_done(), name="feed")
    return feed


async def _guarded(stream: Stream, isolate: bool, failed: dict[str, str]) -> None:
    """Run one stream; with ``isolate``, an exception ends this stream only (reported), not the others."""
    CURRENT_STREAM.set(stream.name)  # this task's and its children's log messages go to this stream's log
    try:
        await stream.pipeline.run()
    except Exception as exc:  # noqa: BLE001 - one failing stream must not end the others
        if not isolate:
            raise
        inner = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else exc
        failed[stream.name] = f"{type(inner).__name__}: {inner}"
        log.error("stream %s failed: %s", stream.name, failed[stream.name], exc_info=exc)


async def run_streams(
    streams: Sequence[Stream],
    engine: Engine,
    load: LoadConfig,
    ui: Callable[[TaskGroup], Awaitable[None]] | None = None,
) -> dict[str, str]:
    """Run the streams, the shared engine and the load governor together; -> the streams that failed.

    ``ui(tg)``, when given, runs the dashboard inside the same TaskGroup (it returns when the user
    quits; the streams are then stopped and drained). With one stream its errors propagate as they
    would from a single pipeline; with several, each stream's are kept to it.
    """
    failed: dict[str, str] = {}
    governor = LoadGovernor(load, [s.pipeline for s in streams], engine)
    try:
        async with TaskGroup() as tg:
            serving = tg.create_task(engine.serve(), name="scoring")
            governing = tg.create_task(governor.run(), name="load")
            runs = [tg.create_task(_guarded(s, len(streams) > 1, failed), name=f"stream-{s.name}") for s in streams]
            if ui is not None:
                await ui(tg)
                for s in streams:  # the user quit (the streams may have ended before)
                    s.pipeline.request_stop()
            await asyncio.gather(*runs)
            governing.cancel()
            serving.cancel()
    finally:
        engine.close()
    for s in streams:
        s.extra["max_shed"] = governor.cfg.degrade[: governor.max_level]
    return failed

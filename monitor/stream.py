"""One stream's session, assembled: its sources, session folder, log, sinks and pipeline.

:func:`open_stream` is what ``mmsa-monitor`` does for each stream once the shared models are loaded
(``engine.py``): a session folder (``--record DIR`` or ``runs/sessions/<time>-<id>[-<stream>]``), the
session's ``monitor.log``, the JSONL session log, the sinks of ``sinks.SINKS``, the recorder when
recording, and the :class:`~mmsa.monitor.pipeline.Pipeline` that ties them together.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mmsa.common.settings import to_dict

from .bus import EventBus, Sink
from .config import MonitorConfig
from .engine import Engine
from .pipeline import Pipeline
from .recorder import Recorder
from .replay import ReplayMedia
from .session import EVENTS_FILE, LOG_FILE, SessionFolder
from .sessionlog import SessionLog
from .sinks import SinkContext, build_sinks
from .source import Source


@dataclass
class Stream:
    """A stream ready to run: ``await stream.pipeline.run()``; ``close()`` once it ended."""

    name: str
    pipeline: Pipeline
    bus: EventBus
    folder: SessionFolder
    replay_media: ReplayMedia | None
    log_handler: logging.Handler | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mqtt(self):
        return next((s for s in self.pipeline.sinks if s.name == "mqtt"), None)

    def close(self) -> None:
        if self.log_handler is not None:
            logging.getLogger("mmsa").removeHandler(self.log_handler)
            self.log_handler.close()
            self.log_handler = None


def plain_config(cfg: MonitorConfig) -> dict:
    """The config for metadata.json, without secrets."""
    d = to_dict(cfg)
    for secret in ("password_file", "password_env", "username"):
        d["mqtt"].pop(secret, None)
    return d


CURRENT_STREAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("mmsa_stream", default=None)
"""The stream whose tasks are running (set by the runner; tasks inherit it): whose monitor.log a message is for."""


class _StreamLog(logging.Filter):
    """A stream's monitor.log takes its own messages and those of no stream (the shared models), not others'."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        return CURRENT_STREAM.get() in (None, self.stream)


def log_to(path: Path, stream: str = "") -> logging.Handler:
    """Log the session (INFO and up) to ``monitor.log`` in its folder; the terminal belongs to the UI."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.addFilter(_StreamLog(stream))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mmsa")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def session_folder(cfg: MonitorConfig, record: str | None, name: str = "") -> SessionFolder:
    session_id = str(uuid.uuid4())
    if record:
        return SessionFolder.create(record, session_id)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"-{name}" if name else ""
    return SessionFolder.create(Path(cfg.session.dir) / f"{stamp}-{session_id[:8]}{suffix}", session_id)


def open_stream(
    cfg: MonitorConfig,
    sources: Sequence[Source],
    engine: Engine,
    *,
    name: str = "",
    record: str | None = None,
    jsonl: str | None = None,
    headless: bool = False,
    replay_media: ReplayMedia | None = None,
    shared: dict[str, Any] | None = None,
    own_engine: bool = True,
    log_file: bool = True,
) -> Stream:
    """Everything one stream writes to and publishes on, around a pipeline over ``sources``."""
    folder = session_folder(cfg, record, name)
    handler = log_to(folder.path / LOG_FILE, name) if log_file else None
    session_log: SessionLog | None = None
    bus: EventBus | None = None
    try:
        path = Path(jsonl) if jsonl else folder.path / EVENTS_FILE
        session_log = SessionLog(path)
        transcriber = engine.transcriber
        folder.update(
            source=" + ".join(s.label for s in sources), model=engine.tag, device=engine.device, stream=name,
            asr=f"{transcriber.device} {transcriber.compute_type}",
            events=EVENTS_FILE if path.resolve().parent == folder.path.resolve() else str(path.resolve()),
            config=plain_config(cfg),
        )
        bus = EventBus()
        session_log.attach(bus)  # first: an event is on disk before any other sink sees it
        sinks = build_sinks(SinkContext(cfg, bus, folder, name, headless, shared if shared is not None else {}))
        recorder = None
        if record:
            live = any(s.live for s in sources)
            recorder = Recorder(folder, cfg.session.record_crf, nominal_fps=cfg.frames.camera_max_fps if live else 30.0)
        pipeline = Pipeline(cfg, sources, engine=engine, bus=bus, folder=folder, session_log=session_log, sinks=sinks,
                            recorder=recorder, stream=name, own_engine=own_engine)
    except BaseException:
        _close_outputs(session_log, bus)
        if handler is not None:
            logging.getLogger("mmsa").removeHandler(handler)
            handler.close()
        raise
    return Stream(name, pipeline, bus, folder, replay_media, handler)


def _close_outputs(session_log: SessionLog | None, bus: EventBus | None) -> None:
    """A stream that failed before it ran: each sink made so far releases what it opened (``Sink.release``: the
    session log's file, an MQTT outbox ``build_sinks`` may have made before failing). Best effort: the error that
    got us here is the one raised."""
    sinks: list[Sink] = list(bus.sinks) if bus is not None else []
    if session_log is not None and session_log not in sinks:
        sinks.append(session_log)
    for sink in sinks:
        try:
            sink.release()
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).warning("closing the %s output failed", sink.name, exc_info=True)

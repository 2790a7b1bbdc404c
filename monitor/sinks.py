"""Which sinks a stream gets: one table, one line per sink.

The session log (always, attached first by the pipeline), the recorder (``--record``, or the
dashboard's ``r``) and the dashboard (the UI itself) are wired by the CLI. Every other sink is a
row of :data:`SINKS`: a factory that looks at the stream's context (its config, bus, session folder)
and returns a :class:`~mmsa.monitor.bus.Sink`, or None when the user did not ask for it. To add an
output (a websocket, a database), write its module with a ``Sink`` subclass and add its row here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bus import BusItem, EventBus, Sink
from .config import MonitorConfig
from .events import MonitorStatus, ScoreEvent
from .session import OUTBOX_FILE, SessionFolder

log = logging.getLogger(__name__)


@dataclass
class SinkContext:
    """What a sink factory may look at."""

    cfg: MonitorConfig
    bus: EventBus
    folder: SessionFolder
    stream: str = ""  # the stream's name; empty for a single stream
    headless: bool = False  # no dashboard: the terminal printer shows the events
    shared: dict[str, Any] = field(default_factory=dict)  # process-wide objects (one metrics server for all streams)


def event_line(ev: ScoreEvent, stream: str = "") -> str:
    """One line per scored utterance for the terminal."""
    mods = " ".join(f"{m[0]}={'-' if v.score is None else f'{v.score:+.2f}'}" for m, v in ev.modalities.items())
    head = f"[{stream}] " if stream else ""
    return (f"{head}[{ev.t_start:7.2f}-{ev.t_end:7.2f}] {ev.score:+.2f} {ev.polarity:8s} conf {ev.confidence:.2f}  "
            f"{mods}  {ev.latency_ms['total']:.0f} ms  \"{ev.text}\"")


class TerminalPrinter(Sink):
    """Headless: each event on stdout, each new status message on stderr.

    When whoever reads stdout goes away (``mmsa-monitor ... | head -3``), the printer falls silent, points
    stdout at the null device (so that nothing fails at exit) and asks the stream to stop cleanly, as a
    first Ctrl-C does: what was scored is in the session log and delivered to MQTT."""

    name = "terminal"

    def __init__(self, stream: str = "") -> None:
        self.stream = stream
        self._last_msg = ""
        self._bus: EventBus | None = None
        self.silent = False  # stdout's reader went away

    def attach(self, bus: EventBus) -> None:
        self._bus = bus
        super().attach(bus)

    def handle(self, item: BusItem) -> None:
        if isinstance(item, ScoreEvent):
            if self.silent:
                return
            try:
                print(event_line(item, self.stream), flush=True)
            except BrokenPipeError:
                self._reader_gone()
        elif isinstance(item, MonitorStatus) and item.message and item.message != self._last_msg:
            self._last_msg = item.message
            head = f"[{self.stream}] " if self.stream else ""
            print(f"mmsa-monitor: {head}{item.message}", file=sys.stderr, flush=True)

    def _reader_gone(self) -> None:
        self.silent = True
        with contextlib.suppress(OSError):  # later writes (and the interpreter's last flush) go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        log.info("standard output was closed: stopping the session cleanly")
        if self._bus is not None:
            self._bus.request_stop()


def mqtt_sink(ctx: SinkContext) -> Sink | None:
    if not ctx.cfg.mqtt.host:
        return None
    from .mqtt import MqttPublisher

    outbox = Path(ctx.cfg.mqtt.outbox) if ctx.cfg.mqtt.outbox else ctx.folder.path / OUTBOX_FILE
    if ctx.cfg.mqtt.outbox and ctx.stream:  # one outbox per stream
        outbox = outbox.with_name(f"{outbox.stem}-{ctx.stream}{outbox.suffix}")
    return MqttPublisher(ctx.cfg.mqtt, ctx.bus, outbox, stream=ctx.stream)


def metrics_sink(ctx: SinkContext) -> Sink | None:
    if not ctx.cfg.metrics.port:
        return None
    from .metrics import MetricsExporter

    exporter = ctx.shared.get("metrics")
    if exporter is None:
        exporter = ctx.shared["metrics"] = MetricsExporter(ctx.cfg.metrics.host, ctx.cfg.metrics.port)
        exporter.start()
    return exporter.sink(ctx.stream)


def terminal_sink(ctx: SinkContext) -> Sink | None:
    return TerminalPrinter(ctx.stream) if ctx.headless and ctx.cfg.session.print_events else None


SINKS: dict[str, Callable[[SinkContext], Sink | None]] = {
    "mqtt": mqtt_sink,  # --mqtt HOST[:PORT] / [mqtt] host
    "metrics": metrics_sink,  # --metrics [HOST:]PORT / [metrics] port
    "terminal": terminal_sink,  # --headless
}


def build_sinks(ctx: SinkContext) -> list[Sink]:
    """The sinks the stream's config asks for, attached to its bus, in the order of :data:`SINKS`."""
    sinks = [s for make in SINKS.values() if (s := make(ctx)) is not None]
    for s in sinks:
        s.attach(ctx.bus)
    return sinks


def close_shared(shared: dict[str, Any]) -> None:
    """Close the process-wide objects the factories made (the metrics server)."""
    for obj in shared.values():
        close = getattr(obj, "close", None)
        if close is not None:
            close()

"""A Prometheus ``/metrics`` endpoint (``--metrics [HOST:]PORT``, ``[metrics]`` in the config).

One HTTP server per process (127.0.0.1 by default) serves every stream's figures, labelled
``stream`` (empty for a single stream). Each stream's bus gets a :class:`MetricsSink` (a
``DROP_OLDEST`` sink: the exporter only keeps gauges and counters, so a lost item costs a stale
gauge, never a score).

| metric | type | labels | meaning |
|---|---|---|---|
| ``mmsa_score`` | gauge | stream, modality | latest score: ``fused``, ``text``, ``audio``, ``vision`` (NaN: absent) |
| ``mmsa_confidence`` | gauge | stream | confidence of the latest event |
| ``mmsa_utterances_total`` | counter | stream, polarity | ScoreEvents published |
| ``mmsa_partials_total`` | counter | stream | partial scores published |
| ``mmsa_drops_total`` | counter | stream, queue | items dropped (frames, audio, windows, feeds, outbox, ...) |
| ``mmsa_window_errors_total`` | counter | stream | windows whose featurize / ASR / scoring failed |
| ``mmsa_latency_seconds`` | histogram | stream | utterance end -> event published (``latency_ms.total``) |
| ``mmsa_behind_seconds`` | gauge | stream | how far processing lags the audio |
| ``mmsa_stream_up`` | gauge | stream | 1 while the stream runs, 0 once it ended |
"""

from __future__ import annotations

import logging
import math

from .bus import BusItem, Sink
from .errors import PublisherError
from .events import MonitorStatus, PartialScore, ScoreEvent

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class MetricsExporter:
    """The process's Prometheus registry and its HTTP server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9464) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise PublisherError("metrics need prometheus-client (pip install 'prometheus-client>=0.20')") from exc
        self.host, self.port = host, port
        self.registry = CollectorRegistry()
        r = self.registry
        self.score = Gauge("mmsa_score", "Latest sentiment score (-3..+3; NaN: modality absent)",
                           ["stream", "modality"], registry=r)
        self.confidence = Gauge("mmsa_confidence", "Confidence of the latest score (0..1)", ["stream"], registry=r)
        self.utterances = Counter("mmsa_utterances", "Scored utterances (ScoreEvents)", ["stream", "polarity"],
                                  registry=r)
        self.partials = Counter("mmsa_partials", "Partial scores published", ["stream"], registry=r)
        self.drops = Counter("mmsa_drops", "Items dropped, by queue", ["stream", "queue"], registry=r)
        self.errors = Counter("mmsa_window_errors", "Windows that failed (featurize, ASR or scoring)", ["stream"],
                              registry=r)
        self.latency = Histogram("mmsa_latency_seconds", "Utterance end -> event published", ["stream"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.behind = Gauge("mmsa_behind_seconds", "How far processing lags the audio", ["stream"], registry=r)
        self.up = Gauge("mmsa_stream_up", "1 while the stream runs", ["stream"], registry=r)
        self._server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Serve ``/metrics`` (in the exporter's own thread); PublisherError in one line if the port is taken."""
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise PublisherError(f"metrics: cannot listen on {self.address} ({exc.strerror or exc})") from exc
        self.port = self._server.server_address[1]  # the real port when 0 asked for any

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def sink(self, stream: str = "") -> MetricsSink:
        return MetricsSink(self, stream)


class MetricsSink(Sink):
    """One stream's figures into the exporter."""

    name = "metrics"

    def __init__(self, exporter: MetricsExporter, stream: str) -> None:
        self.x = exporter
        self.stream = stream
        self._drops: dict[str, int] = {}
        self._errors = 0
        exporter.up.labels(stream).set(1)

    def handle(self, item: BusItem) -> None:
        x, s = self.x, self.stream
        if isinstance(item, ScoreEvent):
            x.score.labels(s, "fused").set(item.score)
            for m, v in item.modalities.items():
                x.score.labels(s, m).set(math.nan if v.score is None else v.score)
            x.confidence.labels(s).set(item.confidence)
            x.utterances.labels(s, item.polarity).inc()
            x.latency.labels(s).observe(item.latency_ms.get("total", 0.0) / 1000)
        elif isinstance(item, PartialScore):
            x.partials.labels(s).inc()
        elif isinstance(item, MonitorStatus):
            self._status(item)

    def _status(self, status: MonitorStatus) -> None:
        x, s = self.x, self.stream
        for queue, n in status.drops.items():  # cumulative counts -> counter increments
            if n > self._drops.get(queue, 0):
                x.drops.labels(s, queue).inc(n - self._drops.get(queue, 0))
                self._drops[queue] = n
        if status.errors > self._errors:
            x.errors.labels(s).inc(status.errors - self._errors)
            self._errors = status.errors
        x.behind.labels(s).set(status.behind_s)
        if status.finished:
            x.up.labels(s).set(0)

"""``mmsa-monitor watch --mqtt HOST[:PORT]``: every monitor on a broker in one view (docs/fleet.md).

No camera, no microphone, no model and no torch: an aiomqtt subscriber to ``<root>/#`` puts
each message through :class:`~mmsa.monitor.fleet.FleetModel` and what changed into a
:class:`~mmsa.monitor.fleet.FeedQueue`, which the fleet dashboard
(:class:`~mmsa.monitor.fleetview.FleetApp`) shows, or ``--headless`` prints one line per event
and per online/offline change. A broker that is down at start or goes away is retried with
exponential backoff and full jitter (``[mqtt] backoff_min_s`` .. ``backoff_max_s``), said in one
line (status bar, or stderr when headless). While the broker is away the streams keep the state
last seen.

TLS, user name and password come from the ``[mqtt]`` section of ``--config FILE`` (the
monitor's config; its other sections are ignored); ``--mqtt`` overrides host and port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys

from .config import MqttConfig, load_config, parse_host_port
from .errors import MonitorError
from .events import MonitorStatus, ScoreEvent
from .fleet import DEFAULT_ROOT, FeedQueue, FeedStatus, FleetModel, Presence, StreamKey
from .mqtt import broker_port, connect_options, read_password, tls_context


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-monitor watch",
        description="Show every mmsa-monitor node and stream publishing to an MQTT broker (scores, "
        "online/offline, health) in one dashboard. Loads no model and opens no camera.",
    )
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="the broker (default: [mqtt] host of --config)")
    p.add_argument("--prefix", metavar="ROOT", default=DEFAULT_ROOT,
                   help=f"topic root the monitors publish under (default {DEFAULT_ROOT})")
    p.add_argument("--headless", action="store_true", help="no dashboard: print one line per event and change")
    p.add_argument("--config", metavar="FILE", help="monitor config TOML; its [mqtt] section gives TLS and login")
    return p


def watch_config(args: argparse.Namespace) -> MqttConfig:
    """The [mqtt] section of ``--config`` with ``--mqtt`` on top; MonitorError without a broker."""
    cfg = load_config(args.config).mqtt
    if args.mqtt:
        host, port = parse_host_port(args.mqtt)
        cfg = MqttConfig(**{**vars(cfg), "host": host, "port": port or cfg.port})
    if not cfg.host:
        raise MonitorError("watch needs a broker: --mqtt HOST[:PORT] (or [mqtt] host in --config)")
    return cfg


class MqttWatcher:
    """Subscribes to ``<root>/#`` and feeds what changed into ``feed``, reconnecting until cancelled."""

    def __init__(self, cfg: MqttConfig, model: FleetModel, feed: FeedQueue) -> None:
        import aiomqtt

        self._aiomqtt = aiomqtt
        self.cfg = cfg
        self.model = model
        self.feed = feed
        self.address = f"{cfg.host}:{broker_port(cfg)}"
        self._password = read_password(cfg)  # errors (no such file, unset variable) before anything runs
        self._tls = tls_context(cfg) if cfg.tls else None
        self._n_bad = 0
        self.connected = False

    def _client(self):
        # A watcher of its own: a random id (two watchers never kick each other off), no session kept. A configured
        # client_id (the monitor's, when watch is given the monitor's config) is its prefix only: the broker lets one
        # client hold an id, so sharing the monitor's would knock the monitor off at every connect.
        identifier = f"{self.cfg.client_id or 'mmsa-monitor'}-watch-{os.getpid()}-{random.randrange(16**6):06x}"
        return self._aiomqtt.Client(self.cfg.host, broker_port(self.cfg), identifier=identifier,
                                    **connect_options(self.cfg, self._password, self._tls))

    async def run(self) -> None:
        delay = self.cfg.backoff_min_s
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(f"{self.model.root}/#", qos=1)
                    self.connected, delay = True, self.cfg.backoff_min_s
                    self._say_connected()
                    async for message in client.messages:
                        self.take(str(message.topic), message.payload, bool(message.retain))
                raise self._aiomqtt.MqttError("the connection closed")
            except self._aiomqtt.MqttError as exc:
                what = "lost" if self.connected else "cannot reach"
                self.connected = False
                self.feed.put(None, FeedStatus(f"MQTT {what} {self.address} ({exc}); retrying", ok=False))
                await asyncio.sleep(random.uniform(0, delay))  # full jitter, as the publisher does
                delay = min(delay * 2, self.cfg.backoff_max_s)

    def take(self, topic: str, payload, retained: bool) -> None:
        """One MQTT message into the model, and what it changed into the feed."""
        raw = payload if isinstance(payload, (bytes, bytearray)) else str(payload or "").encode()
        change = self.model.apply(topic, bytes(raw), retained)
        if change is not None:
            self.feed.put(*change)
        if self.model.n_bad != self._n_bad:
            self._n_bad = self.model.n_bad
            self._say_connected()

    def _say_connected(self) -> None:
        text = f"MQTT connected to {self.address}, watching {self.model.root}/#"
        if self.model.n_bad:
            text += f" · {self.model.n_bad} bad payload(s) ignored, the last: {self.model.last_error}"
        self.feed.put(None, FeedStatus(text, ok=True))


def event_line(key: StreamKey, ev: ScoreEvent) -> str:
    """``kitchen/cam0 #12 [12.34-15.80] +1.42 positive  t+1.60 a+0.90 v-  "it was good"`` (session seconds)."""
    mods = " ".join(f"{m[0]}{'-' if v.score is None else f'{v.score:+.2f}'}" for m, v in ev.modalities.items())
    return f"{key.label} #{ev.seq} [{ev.t_start:.2f}-{ev.t_end:.2f}] {ev.score:+.2f} {ev.polarity}  {mods}  \"{ev.text}\""


async def print_feed(feed: FeedQueue) -> None:
    """``--headless``: events and online/offline on stdout, the broker connection and health notes on stderr."""
    said: dict[StreamKey | None, str] = {}
    async for key, item in feed:
        if isinstance(item, ScoreEvent):
            print(event_line(key, item), flush=True)
        elif isinstance(item, Presence):
            print(f"{key.label} {'online' if item.online else 'offline'}", flush=True)
        elif isinstance(item, (FeedStatus, MonitorStatus)) and item_text(item) != said.get(key, ""):
            said[key] = item_text(item)
            if said[key]:
                prefix = "" if key is None else f"{key.label}: "
                print(f"mmsa-monitor watch: {prefix}{said[key]}", file=sys.stderr, flush=True)


def item_text(item: FeedStatus | MonitorStatus) -> str:
    return item.text if isinstance(item, FeedStatus) else item.message


async def watch(cfg: MqttConfig, root: str, headless: bool) -> None:
    """Watch until cancelled (headless: a signal) or until the user quits the dashboard."""
    feed = FeedQueue()
    watcher = MqttWatcher(cfg, FleetModel(root), feed)
    listening = asyncio.create_task(watcher.run(), name="watch-mqtt")
    listening.add_done_callback(lambda _: feed.close())  # it only ends by failing: end the view too
    try:
        if headless:
            await print_feed(feed)
        else:
            from .fleetview import FleetApp

            await FleetApp(feed, title=f"mmsa-monitor watch {watcher.address}").run_async()
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    if not listening.cancelled() and listening.exception() is not None:
        raise listening.exception()


def main(argv: list[str]) -> int:
    """``mmsa-monitor watch ARGS``; MMSAErrors are turned into one line by the caller (cli.main)."""
    args = build_parser().parse_args(argv)
    cfg = watch_config(args)

    async def run() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                pass
        await watch(cfg, args.prefix, args.headless)

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass  # a signal: the normal way to end a headless watch
    return 0

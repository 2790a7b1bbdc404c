"""MQTT publishing exactly as ARCHITECTURE section 6 says (aiomqtt, MQTT 3.1.1 by default).

``<prefix>/status``  online / offline, retained, QoS 1; ``offline`` is also the Last Will.
``<prefix>/score``   every ScoreEvent, QoS 1, through the on-disk :class:`Outbox` (in order, none lost).
``<prefix>/partial`` partial scores of the open utterance (:class:`PartialScore`), QoS 0, not retained,
                     never through the outbox: only the newest waits, sent once the outbox is empty;
                     dropped while the broker is away and once the utterance's own ScoreEvent arrived.
``<prefix>/state``   the latest ScoreEvent, retained, QoS 1 (for late subscribers).
``<prefix>/health``  the stream's health (:func:`mmsa.monitor.fleet.health_to_json`), retained, QoS 0, on change and at most
                     every ``HEALTH_EVERY_S`` (drops, errors, latency, lag, what is degraded).
``<discovery>/sensor/<node_id>/sentiment/config``  Home Assistant discovery, retained, QoS 1,
re-sent whenever ``<discovery>/status`` says ``online``.

Several streams in one process: one publisher (one connection, one Last Will) per stream, with the
prefix ``mmsa-monitor/<node_id>/<stream>`` and the discovery object id ``<node_id>_<stream>``; a
single stream keeps the topics above unchanged.

The publisher is a ``DURABLE`` sink of the stream's :class:`~mmsa.monitor.bus.EventBus`: the bus
hands it each event inside ``publish``, after the session log has written it, and it appends the
event to its on-disk outbox at once. A broker that is down at start or goes away is retried with
exponential backoff and full jitter while events wait in the outbox. When the bus closes
(session over) it delivers what is left (for up to ``drain_timeout_s``), publishes
``offline`` and disconnects cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from pathlib import Path
from typing import Any

from .bus import BusItem, EventBus, Overflow, Sink
from .config import MqttConfig, node_id
from .drain import Drain
from .errors import PublisherError
from .events import MonitorStatus, PartialScore, ScoreEvent
from .fleet import health_to_json
from .outbox import Outbox

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
HEALTH_EVERY_S = 2.0
OFFLINE_WAIT_S = 1.0  # an aborted session: how long to try to say offline before leaving (the Will would not)


def read_password(cfg: MqttConfig) -> str | None:
    """The password from ``password_file`` or ``password_env`` (never logged)."""
    if cfg.password_file:
        try:
            lines = Path(cfg.password_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PublisherError(f"mqtt.password_file {cfg.password_file}: cannot read ({exc.strerror or exc})") from exc
        return lines[0] if lines else ""
    if cfg.password_env:
        if cfg.password_env not in os.environ:
            raise PublisherError(f"mqtt.password_env: the environment variable {cfg.password_env} is not set")
        return os.environ[cfg.password_env]
    return None


def broker_port(cfg: MqttConfig) -> int:
    """The configured port, else 1883 (8883 with TLS)."""
    return cfg.port or (8883 if cfg.tls else 1883)


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The TLS context of ``cfg`` (CA bundle, client certificate); PublisherError names a bad file."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PublisherError(f"mqtt TLS settings: {exc}") from exc
    if cfg.tls_insecure:
        ctx.check_hostname = False
    return ctx


def connect_options(cfg: MqttConfig, password: str | None, tls: ssl.SSLContext | None) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments shared by the publisher and ``watch``: login, protocol, TLS."""
    import aiomqtt

    return dict(
        username=cfg.username or None,
        password=password if cfg.username else None,
        protocol=aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        keepalive=cfg.keepalive_s,
        tls_context=tls,
        tls_insecure=cfg.tls_insecure if cfg.tls else None,
        timeout=PUBLISH_TIMEOUT_S,
    )


class Topics:
    """The topics of one stream (``stream`` empty: the single-stream layout)."""

    def __init__(self, cfg: MqttConfig, stream: str = "") -> None:
        self.node = node_id(cfg)
        self.stream = stream
        base = (cfg.prefix or f"mmsa-monitor/{self.node}").rstrip("/")
        self.prefix = f"{base}/{stream}" if stream else base
        self.object_id = f"{self.node}_{stream}" if stream else self.node  # Home Assistant's
        self.status = f"{self.prefix}/status"
        self.score = f"{self.prefix}/score"
        self.partial = f"{self.prefix}/partial"
        self.state = f"{self.prefix}/state"
        self.health = f"{self.prefix}/health"
        self.discovery = f"{cfg.discovery_prefix}/sensor/{self.object_id}/sentiment/config"
        self.ha_status = f"{cfg.discovery_prefix}/status"


def discovery_config(topics: Topics) -> dict[str, Any]:
    """Home Assistant MQTT discovery for the fused sentiment score."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        sw = version("mmsa-monitor")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        sw = "dev"
    return {
        "name": f"Sentiment {topics.stream}" if topics.stream else "Sentiment",
        "unique_id": f"mmsa_monitor_{topics.object_id}_sentiment",
        "state_topic": topics.state,
        "value_template": "{{ value_json.score }}",
        "json_attributes_topic": topics.state,
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "state_class": "measurement",
        "icon": "mdi:emoticon-outline",
        "device": {
            "identifiers": [f"mmsa-monitor-{topics.node}"],
            "name": f"mmsa-monitor {topics.node}",
            "manufacturer": "mmsa-monitor",
            "model": "multimodal sentiment monitor",
            "sw_version": sw,
        },
    }


class MqttPublisher(Sink):
    """Owns the MQTT connection of one stream (a DURABLE sink: every event goes to the outbox first)."""

    name = "mqtt"
    overflow = Overflow.DURABLE

    def __init__(self, cfg: MqttConfig, bus: EventBus, outbox_path: str | Path, stream: str = "") -> None:
        if not cfg.host:
            raise PublisherError("MQTT needs a broker host (--mqtt HOST[:PORT])")
        try:
            import aiomqtt
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise PublisherError("aiomqtt is not installed (pip install 'aiomqtt>=2.3,<3')") from exc
        self._aiomqtt = aiomqtt
        self.cfg = cfg
        self.bus = bus
        self.topics = Topics(cfg, stream)
        self.port = broker_port(cfg)
        self._password = read_password(cfg)
        self._tls = tls_context(cfg) if cfg.tls else None
        self.outbox = Outbox(outbox_path, cfg.outbox_max)
        self._wake = asyncio.Event()
        self._closing = False
        self._drain = Drain()  # started when the session ends
        self._offline_tried = False  # on this connection (_offline_now tries once)
        self._state: bytes | None = None
        self._state_sent = True
        self._partial: bytes | None = None  # the newest partial score, not sent yet (QoS 0, never stored)
        self._health: bytes | None = None  # the newest health payload, not sent yet
        self._health_sent = b""
        self._health_due = 0.0
        self._health_timer: asyncio.TimerHandle | None = None
        self.connected = False
        self.n_delivered = 0
        self.n_partials = 0  # partial scores sent
        self.partials_dropped = 0  # partial scores dropped (broker away, or superseded before they could go)
        self.undelivered = 0  # left in the outbox when the publisher ended
        self.attach(bus)  # now: no event published later can be missed

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def _client(self):
        m = self._aiomqtt
        return m.Client(
            self.cfg.host, self.port,
            identifier=(self.cfg.client_id or f"mmsa-monitor-{self.topics.node}")
            + (f"-{self.topics.stream}" if self.topics.stream else ""),
            will=m.Will(self.topics.status, "offline", qos=1, retain=True),
            **connect_options(self.cfg, self._password, self._tls),
        )

    # ------------------------------------------------------------------ tasks

    def drops(self) -> dict[str, int]:
        return {"mqtt_outbox": self.outbox.dropped} if self.outbox.dropped else {}

    def release(self) -> None:
        self.outbox.close()

    def accept(self, item: BusItem) -> None:
        """Inside ``publish``: an event goes to the outbox now; the newest partial and health wait in memory."""
        if isinstance(item, ScoreEvent):
            payload = item.to_json().encode()
            self.outbox.append(self.topics.score, payload, qos=1)
            self._state, self._state_sent = payload, False
            self._drop_partial()  # the event it previewed is here (partials precede their event on the bus)
        elif isinstance(item, PartialScore):
            self._drop_partial()
            if not (self.connected and not self._closing):  # ephemeral: not kept for a broker that is away
                self.partials_dropped += 1
                return
            self._partial = item.event.to_json().encode()
        elif isinstance(item, MonitorStatus):
            self._health = health_to_json(item).encode()
        self._wake.set()

    async def run(self) -> None:
        """Publish until the bus closes and the outbox is delivered (or the drain time is over)."""
        ending = asyncio.create_task(self._until_closed(), name="mqtt-intake")
        try:
            await self._connection_loop()
        finally:
            ending.cancel()
            await asyncio.gather(ending, return_exceptions=True)
            self.undelivered = len(self.outbox)
            self.outbox.close()
            if self.undelivered:
                log.warning("MQTT: %d event(s) not delivered to %s; they are in %s and in the session log",
                            self.undelivered, self.address, self.outbox.path)

    async def _until_closed(self) -> None:
        await self.closed()
        self._closing = True
        self._drain.start(self.cfg.drain_timeout_s)
        self._wake.set()

    def _drop_partial(self) -> None:
        if self._partial is not None:
            self._partial = None
            self.partials_dropped += 1

    async def _connection_loop(self) -> None:
        delay = self.cfg.backoff_min_s
        while True:
            left = self._drain.left()
            if left is not None and left <= 0:
                return
            try:
                async with self._client() as client:
                    delay = self.cfg.backoff_min_s
                    self.connected = True
                    self._set_status("connected", f"MQTT connected to {self.address}")
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await self._offline_now(client)
                        raise
                    return
            except self._aiomqtt.MqttError as exc:
                was = self.connected
                self.connected = False
                self._drop_partial()
                wait = random.uniform(0, delay)  # full jitter: many monitors do not reconnect in lockstep
                delay = min(delay * 2, self.cfg.backoff_max_s)
                msg = f"MQTT {'lost' if was else 'cannot reach'} {self.address} ({exc}); retrying"
                log.warning("%s in %.1f s", msg, wait)
                self._set_status("disconnected", msg)
            left = self._drain.left()
            if left is not None:
                wait = min(wait, max(left, 0.0))
            await self._sleep(wait)

    async def _offline_now(self, client) -> None:
        """Leaving while connected before the outbox was delivered (the drain time is over, or the session is being
        aborted: a second Ctrl-C, a stage that failed). Leaving the client sends a clean DISCONNECT, after which the
        broker discards the Last Will, so the retained status would stay ``online``: publish ``offline`` ourselves
        first, for at most ``OFFLINE_WAIT_S``; once per connection."""
        if self._offline_tried:
            return
        self._offline_tried = True
        try:
            await asyncio.wait_for(client.publish(self.topics.status, "offline", qos=1, retain=True), OFFLINE_WAIT_S)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - best effort on the way out
            log.warning("MQTT: could not publish offline to %s on the way out", self.address)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the session ends (so the final drain is not delayed)."""
        if self._closing:
            await asyncio.sleep(seconds)
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _serve(self, client) -> None:
        self._offline_tried = False
        if not await self._announce(client):
            await self._offline_now(client)  # the drain time ran out while (re)connecting
            return
        listener = asyncio.create_task(self._listen(client), name="mqtt-listen")
        sender = asyncio.create_task(self._send(client), name="mqtt-send")
        try:
            done, _ = await asyncio.wait({listener, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listener, sender):
                task.cancel()
            await asyncio.gather(listener, sender, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        if sender not in done:  # the listener ended: the connection is gone
            raise self._aiomqtt.MqttError("connection closed")

    async def _announce(self, client) -> bool:
        """``online``, then Home Assistant's discovery and the subscription to its status; False: the drain time ran out."""
        if not await self._publish(client, self.topics.status, "online", qos=1, retain=True):
            return False
        if not self.cfg.discovery:
            return True
        return await self._send_discovery(client) and await self._drain.within(
            client.subscribe(self.topics.ha_status, qos=1))

    async def _send_discovery(self, client) -> bool:
        payload = json.dumps(discovery_config(self.topics), separators=(",", ":"))
        return await self._publish(client, self.topics.discovery, payload, qos=1, retain=True)

    async def _listen(self, client) -> None:
        async for message in client.messages:
            if str(message.topic) == self.topics.ha_status and bytes(message.payload or b"").strip() == b"online":
                log.info("Home Assistant is online: re-sending discovery")
                await self._send_discovery(client)

    async def _send(self, client) -> None:
        """Deliver the outbox in order, one acknowledged message at a time; then the newest partial; the state.

        Once the session is over, at most until the drain time is over: what is left stays in the outbox (on disk,
        counted in ``undelivered``), however many messages wait or however slowly the broker acknowledges them.
        """
        while True:
            self._wake.clear()
            for msg in self.outbox.peek():
                if not await self._publish(client, msg.topic, msg.payload, qos=msg.qos, retain=msg.retain):
                    await self._offline_now(client)
                    return
                self.outbox.remove(msg.id)
                self.n_delivered += 1
            if len(self.outbox):
                continue
            if self._partial is not None and not self._closing:
                partial, self._partial = self._partial, None
                if not await self._publish(client, self.topics.partial, partial, qos=0, retain=False):
                    await self._offline_now(client)
                    return
                self.n_partials += 1
            if not self._state_sent and self._state is not None:
                state = self._state
                if not await self._publish(client, self.topics.state, state, qos=1, retain=True):
                    await self._offline_now(client)
                    return
                self._state_sent = state is self._state
            if not await self._send_health(client) or self._closing and not len(self.outbox) and self._state_sent:
                await self._offline_now(client)  # done (or out of time): at most OFFLINE_WAIT_S
                return
            left = self._drain.left()
            if left is not None and left <= 0:
                await self._offline_now(client)
                return
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    pass

    async def _publish(self, client, topic: str, payload: str | bytes, *, qos: int, retain: bool) -> bool:
        """Publish and wait for its acknowledgement within the drain time (:meth:`Drain.within`), none begun once it is
        over. False: not published (the session is ending and the time is up)."""
        return not self._drain.over() and await self._drain.within(client.publish(topic, payload, qos=qos, retain=retain))

    async def _send_health(self, client) -> bool:
        """The newest health payload, if it changed and the last one is ``HEALTH_EVERY_S`` old (the final one always).
        False: the drain time ran out."""
        health = self._health
        if health is None or health == self._health_sent:
            return True
        now = time.monotonic()
        if now < self._health_due and not self._closing:
            if self._health_timer is None:
                def due() -> None:
                    self._health_timer = None
                    self._wake.set()

                self._health_timer = asyncio.get_running_loop().call_later(self._health_due - now, due)
            return True
        if not await self._publish(client, self.topics.health, health, qos=0, retain=True):
            return False
        self._health_sent, self._health_due = health, now + HEALTH_EVERY_S
        return True

    def _set_status(self, state: str, message: str) -> None:
        if self.bus.closed:  # the session is over: nobody listens any more
            return
        if message:
            self.bus.update_status(mqtt=state, message=message)
        else:
            self.bus.update_status(mqtt=state)

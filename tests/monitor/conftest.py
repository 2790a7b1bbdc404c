"""Shared fixtures of the monitor tests (the dashboard tests reuse them; keep the names stable).

* ``tiny_checkpoint``: a checkpoint of a tiny random-weight model (pipeline behaviour, contracts
  and parity do not depend on the weights).
* ``speech_clip``: a real espeak-ng clip (positive, negative, neutral sentence) with the
  astronaut's face, written by ``examples/make_sample.py``; ``speech_script`` its sentences.
* ``transcriber``: the packaged Whisper tiny.en, loaded once per test session.
* ``broker``: a mosquitto broker on a free 127.0.0.1 port (``broker.stop()``, ``.kill()``,
  ``.start()`` restarts it on the same port with its persisted sessions).
* ``make_pipeline``: builds a :class:`Pipeline` over given sources with the fixtures above.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import load_example

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
CLIP_SENTENCES = [
    ("positive", "I really love this movie, it made me so happy."),
    ("negative", "This is the worst day of my life, everything went wrong."),
    ("neutral", "The report has twelve pages and two tables."),
]


def load_make_sample():
    """examples/make_sample.py as a module (the generator of the sample session)."""
    return load_example("make_sample")


@pytest.fixture(scope="session")
def make_sample():
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("needs espeak-ng and ffmpeg (apt-get install espeak-ng ffmpeg)")
    return load_make_sample()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, make_sample):
    """A folder with speech.mp4 (video + audio), speech.wav (audio only) and their script."""
    return speech_clips(make_sample, tmp_path_factory.mktemp("clip"), CLIP_SENTENCES, gap_s=1.0)


def speech_clips(make_sample, out: Path, sentences, gap_s: float) -> tuple[Path, dict]:
    """speech.mp4 (video + audio) and speech.wav (audio only) of ``sentences`` in ``out``, and their script."""
    script = make_sample.make_clip(out / "speech.mp4", sentences, gap_s=gap_s, lead_s=0.5, fps=10.0)
    make_sample.make_clip(out / "speech.wav", sentences, gap_s=gap_s, lead_s=0.5, video=False)
    return out, script


@pytest.fixture(scope="session")
def speech_clip(clip_dir) -> Path:
    return clip_dir[0] / "speech.mp4"


@pytest.fixture(scope="session")
def speech_script(clip_dir) -> list[dict]:
    return clip_dir[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_bert) -> Path:
    import torch

    from mmsa.model import MMSAModel, save_checkpoint
    from tests.model.helpers import tiny_config

    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, name="tiny")


@pytest.fixture(scope="session")
def loaded_tiny(tiny_checkpoint):
    from mmsa.model import load_checkpoint

    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def transcriber():
    from mmsa.monitor.asr import Transcriber
    from mmsa.monitor.config import AsrConfig

    return Transcriber(AsrConfig(), device="cpu")


@pytest.fixture()
def make_pipeline(tmp_path, transcriber, loaded_tiny):
    """make_pipeline(sources, cfg=None, record=False, bus=None) -> (pipeline, bus, folder); ``sources``: a list."""
    from mmsa.monitor.bus import EventBus
    from mmsa.monitor.config import MonitorConfig
    from mmsa.monitor.engine import Engine
    from mmsa.monitor.pipeline import Pipeline
    from mmsa.monitor.recorder import Recorder
    from mmsa.monitor.scorer import Scorer
    from mmsa.monitor.session import EVENTS_FILE, SessionFolder
    from mmsa.monitor.sessionlog import SessionLog

    n = 0

    def make(sources, cfg: MonitorConfig | None = None, record: bool = False, bus: EventBus | None = None):
        nonlocal n
        n += 1
        cfg = cfg or MonitorConfig()
        folder = SessionFolder.create(tmp_path / f"session{n}", f"test-session-{n}")
        bus = bus or EventBus()
        recorder = Recorder(folder, crf=0) if record else None
        engine = Engine(transcriber, Scorer(loaded_tiny, "cpu"), cfg.scorer)
        pipe = Pipeline(cfg, list(sources), engine=engine, bus=bus, folder=folder,
                        session_log=SessionLog(folder.path / EVENTS_FILE), recorder=recorder)
        return pipe, bus, folder

    return make


def replay_sources(path, fast: bool = True) -> list:
    """A replay of ``path`` as a stream's sources."""
    from mmsa.monitor.replay import ReplaySource, open_replay

    return [ReplaySource(open_replay(path), fast=fast)]


# --------------------------------------------------------------------------- broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto process on 127.0.0.1 with persistence (sessions survive a kill and restart)."""

    def __init__(self, folder: Path, extra: str = "", head: str = "") -> None:
        """``head``: global settings before the listener; ``extra``: more settings (and listeners) after it."""
        if MOSQUITTO is None:
            pytest.skip("needs the mosquitto broker (apt-get install mosquitto)")
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"{head}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"{extra}\n"
            f"persistence true\npersistence_location {folder}/\n"
            "autosave_interval 1\nautosave_on_changes true\n"
            f"user {getpass.getuser()}\n"
            "max_queued_messages 10000\n"
        )
        self.proc: subprocess.Popen | None = None
        self.log = folder / "mosquitto.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Broker:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the listener (a startup wait, not a test sync)
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-500:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye (sessions persisted so far survive)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture()
def broker(tmp_path):
    b = Broker(_mkdir(tmp_path / "broker")).start()
    yield b
    b.stop()


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture()
def broker_factory(tmp_path):
    """broker_factory(extra=..., head=..., start=True) -> a Broker (stopped after the test)."""
    made: list[Broker] = []

    def make(extra: str = "", head: str = "", start: bool = True) -> Broker:
        b = Broker(_mkdir(tmp_path / f"broker{len(made)}"), extra, head)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop()


# --------------------------------------------------------------------------- helpers


class Subscriber:
    """An aiomqtt subscriber collecting messages; tests await conditions on what it has seen."""

    def __init__(self, broker: Broker, topics: list[str], client_id: str | None = None, persistent: bool = False):
        self.broker = broker
        self.topics = topics
        self.client_id = client_id
        self.persistent = persistent
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self.qos: list[int] = []  # the QoS each of ``messages`` was delivered with
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.client_id,
                                          clean_session=not self.persistent if self.client_id else None) as c:
                    for t in self.topics:
                        await c.subscribe(t, qos=1)
                    self.connected.set()
                    async for m in c.messages:
                        self.messages.append((str(m.topic), bytes(m.payload), bool(m.retain)))
                        self.qos.append(int(m.qos))
                        self._changed.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)  # reconnect loop of the test client

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    async def wait_for(self, predicate, timeout: float = 60.0) -> None:
        async def loop():
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


def monitor_cmd(*args: str) -> list[str]:
    """The ``mmsa-monitor ARGS`` command line (the console script's module, in this interpreter)."""
    return [sys.executable, "-m", "mmsa.monitor.cli", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``mmsa-monitor ARGS`` in ``cwd`` (session folders go to ``cwd/runs/sessions``)."""
    return subprocess.run(monitor_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)

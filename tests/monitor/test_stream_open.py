"""open_stream's error path: a stream that fails while it is being assembled leaves no file open."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.devices import CameraSource
from mmsa.monitor.engine import Engine
from mmsa.monitor.errors import MonitorError, PublisherError
from mmsa.monitor.scorer import Scorer
from mmsa.monitor.sinks import close_shared
from mmsa.monitor.stream import open_stream
from tests.monitor.conftest import free_port, replay_sources


def open_files_under(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open (its file descriptors, from /proc)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder.resolve())):
            out.append(target)
    return out


@pytest.fixture()
def engine(transcriber, loaded_tiny):
    return Engine(transcriber, Scorer(loaded_tiny, "cpu"))


def mqtt_config(tmp_path: Path) -> MonitorConfig:
    """MQTT on (a broker is not needed to open the outbox) and session folders under tmp_path."""
    return MonitorConfig().replace("mqtt", host="127.0.0.1", port=free_port()).replace("session", dir=str(tmp_path / "s"))


def test_a_sink_that_fails_to_open_leaves_the_session_log_and_the_outbox_closed(tmp_path, engine, speech_clip):
    """MQTT opens its outbox, then the metrics port is taken: open_stream raises, and closes what was opened."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = mqtt_config(tmp_path).replace("metrics", host="127.0.0.1", port=taken.getsockname()[1])
        shared: dict = {}
        try:
            with pytest.raises(PublisherError, match="cannot listen"):
                open_stream(cfg, replay_sources(speech_clip), engine, shared=shared)
        finally:
            close_shared(shared)
    (folder,) = (tmp_path / "s").iterdir()
    assert (folder / "outbox.sqlite").exists()  # MQTT opened it
    assert open_files_under(folder) == []


def test_a_pipeline_that_cannot_be_built_leaves_the_session_log_and_the_outbox_closed(tmp_path, engine):
    """A camera and no microphone: Pipeline() refuses after the sinks were made; nothing stays open."""
    camera = CameraSource("0", lambda: 0.0)  # never started: only its kinds matter here
    with pytest.raises(MonitorError, match="needs a microphone"):
        open_stream(mqtt_config(tmp_path), [camera], engine)
    (folder,) = (tmp_path / "s").iterdir()
    assert (folder / "events.jsonl").exists()
    assert open_files_under(folder) == []

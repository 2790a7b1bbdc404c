"""The session folder: every file a session writes, named once.

Layout (``--record DIR``, else ``runs/sessions/<YYYYmmdd-HHMMSS>-<id>/``)::

    metadata.json   format, session id, times, source, model, config, file names below
    events.jsonl    the session log (one ScoreEvent per line)
    monitor.log     the session's log messages (INFO and up)
    outbox.sqlite   MQTT messages not yet acknowledged by the broker (with --mqtt)
    audio.wav       16 kHz mono float32 PCM: the audio exactly as the pipeline consumed it
    video.mkv       the frames the pipeline kept (after downscaling); H.264, lossless by default
    frames.csv      session time of every video frame (frame i of video.mkv = row i)

``--replay DIR`` feeds audio.wav and video.mkv back with the recorded times, so a session
recorded from its start replays to the same windows, transcripts and scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import PublisherError
from .events import utc_now_iso

SESSION_FORMAT = "mmsa-monitor-session/1"
METADATA = "metadata.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "monitor.log"
OUTBOX_FILE = "outbox.sqlite"
AUDIO_FILE = "audio.wav"
VIDEO_FILE = "video.mkv"
FRAMES_FILE = "frames.csv"


class SessionFolder:
    """A folder holding one session's log, metadata and (optionally) recorded media."""

    def __init__(self, path: Path, metadata: dict[str, Any]) -> None:
        self.path = path
        self.metadata = metadata

    @classmethod
    def create(cls, path: str | Path, session_id: str) -> SessionFolder:
        path = Path(path).expanduser()
        if (path / METADATA).exists() or (path / AUDIO_FILE).exists():
            raise PublisherError(f"{path}: already holds a session; choose an empty folder for --record")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublisherError(f"{path}: cannot create the session folder ({exc.strerror or exc})") from exc
        folder = cls(path, {"format": SESSION_FORMAT, "session": session_id, "started": utc_now_iso()})
        folder.save()
        return folder

    @property
    def session_id(self) -> str:
        return str(self.metadata["session"])

    def update(self, **kw: Any) -> None:
        self.metadata.update(kw)
        self.save()

    def save(self) -> None:
        tmp = self.path / (METADATA + ".tmp")
        tmp.write_text(json.dumps(self.metadata, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.path / METADATA)

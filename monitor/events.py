"""The ScoreEvent contract (ARCHITECTURE section 5), partial scores and the status snapshot.

One ScoreEvent per scored utterance; the JSONL log line and the MQTT payload are the same JSON.
``confidence`` (0..1) is defined in :func:`confidence_of`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from mmsa.common.scale import MODALITIES, POLARITIES, SCORE_MAX, SCORE_MIN, polarity_of

SCHEMA = 1


def confidence_of(score: float, unimodal: dict[str, float | None]) -> float:
    """How much to trust the polarity, 0..1.

    The mean of two terms: the distance of the fused score from the neutral band edge,
    ``min(1, |score| / 1.5)`` (a score of +-1.5 or beyond counts as fully clear), and the
    agreement of the present modalities with the fused polarity (the fraction of unimodal
    scores whose sign matches it; 1.0 when only one modality is present).
    """
    clarity = min(1.0, abs(score) / 1.5)
    present = [s for s in unimodal.values() if s is not None and not math.isnan(s)]
    if len(present) <= 1:
        agreement = 1.0
    else:
        sign = 1.0 if score >= 0 else -1.0
        agreement = sum(1.0 for s in present if s * sign >= 0) / len(present)
    return round((clarity + agreement) / 2, 3)


def utc_now_iso() -> str:
    """``2026-11-27T19:30:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ModalityScore:
    present: bool
    score: float | None
    face_frames: int | None = None  # vision only

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"present": self.present, "score": None if self.score is None else round(self.score, 4)}
        if self.face_frames is not None:
            d["face_frames"] = self.face_frames
        return d


@dataclass
class ScoreEvent:
    """One scored utterance (contract: field names and meaning are fixed)."""

    session: str
    seq: int
    t_start: float
    t_end: float
    text: str
    score: float
    modalities: dict[str, ModalityScore]
    latency_ms: dict[str, float]
    model: str
    wall_time: str = field(default_factory=utc_now_iso)
    polarity: str = ""
    confidence: float = 0.0
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if not self.polarity:
            self.polarity = polarity_of(self.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "session": self.session,
            "seq": self.seq,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "wall_time": self.wall_time,
            "text": self.text,
            "score": round(self.score, 4),
            "polarity": self.polarity,
            "confidence": round(self.confidence, 3),
            "modalities": {m: self.modalities[m].to_dict() for m in MODALITIES},
            "latency_ms": {k: round(v, 1) for k, v in self.latency_ms.items()},
            "model": self.model,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreEvent:
        """Parse and validate; raises ValueError naming the first field that breaks the contract."""
        validate_event(d)
        mods = {
            m: ModalityScore(v["present"], v["score"], v.get("face_frames")) for m, v in d["modalities"].items()
        }
        return cls(
            session=d["session"], seq=d["seq"], t_start=d["t_start"], t_end=d["t_end"], text=d["text"],
            score=d["score"], modalities=mods, latency_ms=dict(d["latency_ms"]), model=d["model"],
            wall_time=d["wall_time"], polarity=d["polarity"], confidence=d["confidence"], schema=d["schema"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ScoreEvent:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        return cls.from_dict(d)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_event(d: Any) -> None:
    """Check a decoded ScoreEvent against the contract; raise ValueError naming the problem."""
    if not isinstance(d, dict):
        raise ValueError("event is not a JSON object")
    required = {
        "schema": lambda v: v == SCHEMA,
        "session": lambda v: isinstance(v, str) and len(v) > 0,
        "seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "t_start": _num,
        "t_end": _num,
        "wall_time": lambda v: isinstance(v, str) and v.endswith("Z") and "T" in v,
        "text": lambda v: isinstance(v, str),
        "score": lambda v: _num(v) and SCORE_MIN <= v <= SCORE_MAX,
        "polarity": lambda v: v in POLARITIES,
        "confidence": lambda v: _num(v) and 0.0 <= v <= 1.0,
        "modalities": lambda v: isinstance(v, dict) and set(v) == set(MODALITIES),
        "latency_ms": lambda v: isinstance(v, dict) and {"asr", "model", "total"} <= set(v) and all(map(_num, v.values())),
        "model": lambda v: isinstance(v, str) and "@" in v,
    }
    for key, ok in required.items():
        if key not in d:
            raise ValueError(f"missing field {key!r}")
        if not ok(d[key]):
            raise ValueError(f"bad value for {key!r}: {d[key]!r}")
    if d["t_end"] < d["t_start"]:
        raise ValueError("t_end before t_start")
    if d["polarity"] != polarity_of(d["score"]):
        raise ValueError(f"polarity {d['polarity']!r} does not match score {d['score']}")
    for m, v in d["modalities"].items():
        if not isinstance(v, dict) or not isinstance(v.get("present"), bool) or "score" not in v:
            raise ValueError(f"bad modality entry {m!r}: {v!r}")
        if v["present"] and not _num(v["score"]):
            raise ValueError(f"modality {m!r} is present but has no score")
        if not v["present"] and v["score"] is not None:
            raise ValueError(f"modality {m!r} is absent but has a score")
    if "face_frames" not in d["modalities"]["vision"]:
        raise ValueError("modalities.vision.face_frames is missing")


@dataclass
class MonitorStatus:
    """A snapshot of the monitor's health, published on the bus for the dashboard."""

    source: str = ""  # "camera 0 + mic", "replay examples/sample", ...
    camera: str = "off"  # ok | lost | off | replay
    mic: str = "off"  # ok | missing | off | replay
    model: str = ""  # checkpoint tag
    device: str = "cpu"
    mqtt: str = "off"  # connected | disconnected | off
    recording: bool = False
    drops: dict[str, int] = field(default_factory=dict)  # queue name -> dropped items
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    message: str = ""  # last notable thing ("camera lost", "broker unreachable, retrying")
    face_seen: bool | None = None  # live face tracker: a face is in view now (None: no video)
    n_events: int = 0  # ScoreEvents published so far in this session
    finished: bool = False  # the session ended (replay done or stopped); the UI may stay open
    session_dir: str = ""  # the session folder (events.jsonl, metadata.json, recordings)
    stream: str = ""  # the stream's name (several streams in one process); empty for a single stream
    errors: int = 0  # windows whose featurization, ASR or scoring failed (logged and skipped; the session goes on)
    behind_s: float = 0.0  # how far the stream's processing lags the audio it was given (live: real time)
    degraded: list[str] = field(default_factory=list)  # what was switched off under load (e.g. "partials")

    def replace(self, **kw: Any) -> MonitorStatus:
        return dataclasses.replace(self, **kw)


@dataclass
class PartialScore:
    """A score of a still-open window (MQTT ``<prefix>/partial``, the dashboard's "listening" line).

    ``event`` is a valid ScoreEvent of the window heard so far, never written to the session
    log, the outbox or the report. Its fields mean what they mean in a final event, except:
    ``seq`` is the seq the session's next ScoreEvent will get (the event of this utterance's
    next window, unless that window turns out unscorable), so several partials share it and the
    final event with that seq supersedes them; ``t_start``/``t_end`` span the audio scored so
    far (the final window may end later and, past ``max_window_s``, start later); ``text`` is
    Whisper's transcript of that audio; ``latency_ms.total`` runs from the arrival of the
    window's last audio block to the publication of the partial (``asr`` and ``model`` as usual).
    """

    event: ScoreEvent


class Controls(Protocol):
    """What the dashboard may ask of the running monitor (keys ``q`` and ``r``)."""

    def request_stop(self) -> None:
        """Begin a clean shutdown: stop sources, drain queues, flush logs, publish ``offline``."""

    def toggle_recording(self) -> bool:
        """Start or stop recording; return True when recording is now on. Raises MonitorError if unavailable."""

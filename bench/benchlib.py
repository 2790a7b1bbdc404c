"""Shared helpers of the benchmarks in bench/: the machine, the model, generated sessions, a broker, RSS.

The bench scripts run as ``python bench/<name>.py`` (so this folder is on ``sys.path``) and
each measurement runs in its own interpreter (``bench/run.py`` starts them), so one
measurement's memory and warm caches never leak into the next.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsa.model.runtime import flush_denormals

# Like mmsa-monitor, which does this first thing: torch's worker threads, started later, inherit it.
flush_denormals()

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"  # generated sessions and the stand-in checkpoint (git-ignored)
SAMPLE_SESSION = REPO / "examples" / "sample-session"
MOSI_CLIP = REPO.parent / "shared" / "data" / "mosi" / "clips" / "Oz06ZWiO20M_6.mp4"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)

# Sentences of the generated sessions: 3 to 29 words, so espeak-ng at 150 words/min speaks each
# for about 0.6 to 9 s (an utterance of at most ~9.3 s of speech is one window: 10 s minus the
# 200 ms pad and the 500 ms of silence that closes it).
SENTENCES: list[tuple[str, str]] = [
    ("positive", "I love it."),
    ("negative", "This is the worst day of my life, everything went wrong."),
    ("neutral", "The meeting starts at three o'clock in the second room on the left side of the building."),
    ("positive", "What a wonderful surprise."),
    ("negative", "I hate waiting in line, it is boring and it makes me angry, and today I waited for almost "
                 "two whole hours in the cold before anyone looked at me."),
    ("neutral", "The report has twelve pages and two tables."),
    ("positive", "The food was delicious and the people were very friendly."),
    ("negative", "Terrible service."),
    ("neutral", "We took the train at nine and arrived a little after noon, then walked to the hotel near "
                "the station."),
    ("positive", "Honestly this was one of the best films I have seen this year."),
    ("negative", "The room was dirty and the bed was broken."),
    ("neutral", "It is raining today."),
    ("positive", "My sister called to say that she passed her final exam with the best grade in her class, and "
                 "we are all so proud and happy for her tonight."),
    ("negative", "Nobody answered the phone."),
    ("neutral", "The bus leaves every twenty minutes from the corner."),
    ("positive", "Thank you so much, this is great."),
    ("negative", "The movie was long, slow and painfully dull, and the ending made no sense at all to any of "
                 "us."),
    ("neutral", "Please close the door."),
    ("positive", "The concert was amazing and the crowd sang along to every single song."),
    ("negative", "I lost my keys again."),
    ("neutral", "The store opens at eight in the morning and closes at six in the evening, except on Sundays "
                "and holidays, when it stays closed."),
    ("positive", "Great job, everyone."),
    ("negative", "The package arrived late and half of the glasses inside were broken."),
    ("neutral", "There are four chairs around the kitchen table."),
]


# --------------------------------------------------------------------------- the machine


def load_avg() -> list[float]:
    """1, 5 and 15 minute load averages (``uptime``)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """What the benchmark runs on: CPU, cores, memory, torch build and threads, CUDA card."""
    import torch

    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_name(),
        "n_cpus": os.cpu_count(),
        "mem_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
        "summary": f"{cpu_name()}, {os.cpu_count()} CPUs" + (f" + {cuda}" if cuda else " (no CUDA)"),
    }


def set_torch_threads(n: int) -> None:
    """``n`` > 0: limit torch's intra-op threads (the monitor itself leaves torch's default)."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def wall_offset() -> float:
    """time.time() - time.monotonic(), the median of a few readings (maps monotonic times to Unix time)."""
    return statistics.median(time.time() - time.monotonic() for _ in range(7))


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median seconds of ``fn()`` over ``repeat`` calls after ``warmup`` calls (and all the times)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def write_json(path: str | Path | None, data: dict[str, Any]) -> None:
    """A section's figures to ``path`` (its ``--json``), or to stdout when there is none."""
    text = json.dumps(data, indent=2, default=_plain) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def _plain(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def edit_distance(a: list[str], b: list[str]) -> int:
    """Word-level Levenshtein distance."""
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the model


def resolve_model(spec: str = "auto") -> tuple[str, dict[str, Any]]:
    """The checkpoint to benchmark and a description of it.

    ``auto``: the embedded default model when it has been built (``make default-model``), else a
    stand-in of the same size: ``ModelConfig()`` with the packaged MiniLM and random heads (the
    compute cost is the same; the scores are meaningless), saved once under ``.cache/bench``.
    """
    from mmsa.model import read_info
    from mmsa.model.resources import DEFAULT_CHECKPOINT

    if spec == "auto":
        spec = "default" if DEFAULT_CHECKPOINT.is_file() else ""
    if spec:
        info = read_info(spec)
        return spec, {"source": "default" if spec == "default" else "checkpoint", "path": str(info.path),
                      "tag": info.tag}
    path = CACHE / "standin-full-size.safetensors"
    if not path.is_file():
        say("no default model yet: building a full-size stand-in (ModelConfig(), packaged MiniLM, random heads)")
        import torch

        from mmsa.model import MMSAModel, ModelConfig, resolve_bert, save_checkpoint

        torch.manual_seed(0)
        model = MMSAModel.build(ModelConfig(), resolve_bert()).eval()
        save_checkpoint(path, model, name="bench-standin", training={"note": "random heads, for benchmarks only"})
    info = read_info(path)
    return str(path), {"source": "stand-in: ModelConfig() with the packaged MiniLM, random heads "
                                 "(model/default/default.safetensors not built yet)",
                       "path": str(path), "tag": info.tag}


# --------------------------------------------------------------------------- sessions


def load_make_sample():
    """examples/make_sample.py as a module (the generator of the sample session)."""
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "examples" / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def speech_end_s(audio: np.ndarray, t_start: float, t_end: float, sample_rate_hz: int = 16_000) -> float:
    """Where the speech in ``audio[t_start:t_end]`` ends: the end of the last 10 ms frame whose RMS is
    above 1% (-40 dB) of the loudest frame of the span. espeak-ng appends about 0.4 s of silence
    to every sentence, so the script's ``t_end`` is later than the end of the speech."""
    hop = sample_rate_hz // 100
    a = audio[int(t_start * sample_rate_hz) : int(t_end * sample_rate_hz)]
    n = a.size // hop
    if n == 0:
        return t_end
    rms = np.sqrt(np.mean(a[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.01 * rms.max())
    return round(t_start + (int(loud[-1]) + 1) * hop / sample_rate_hz, 3)


def make_session(name: str, sentences: Sequence[tuple[str, str]]) -> Path:
    """A replayable session folder under .cache/bench (generated once, reused while nothing changed).

    The folder is what ``examples/make_sample.py`` writes (session.mp4: espeak-ng speech over a pan
    across the astronaut's face, 320x240 at 10 fps; metadata.json; script.json), and script.json
    gains ``speech_end`` per sentence (see :func:`speech_end_s`).
    """
    gen = REPO / "examples" / "make_sample.py"
    key = hashlib.sha256(json.dumps(list(sentences)).encode() + gen.read_bytes()).hexdigest()[:12]
    folder = CACHE / f"{name}-{key}"
    if (folder / "script.json").is_file():
        return folder
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        raise SystemExit("bench: generating sessions needs espeak-ng and ffmpeg (make install)")
    say(f"generating {folder.relative_to(REPO)} ({len(sentences)} sentences) ...")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    load_make_sample().make_session(tmp, sentences)
    add_speech_ends(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def add_speech_ends(folder: Path) -> list[dict]:
    from mmsa.media import load_audio

    script = json.loads((folder / "script.json").read_text())
    audio = load_audio(folder / "session.mp4")
    for s in script:
        s["speech_end"] = speech_end_s(audio, s["t_start"], s["t_end"])
    (folder / "script.json").write_text(json.dumps(script, indent=2) + "\n")
    return script


def latency_session(quick: bool) -> Path:
    """24 utterances of 1 to 9 s (quick: the 8-sentence sample session's sentences)."""
    if quick:
        return make_session("latency-quick", load_make_sample().SENTENCES)
    return make_session("latency", SENTENCES)


def long_session(minutes: float) -> Path:
    """At least ``minutes`` of media: the sentences of :data:`SENTENCES`, repeated."""
    per_cycle_s = 118.0  # a little less than one pass over the 24 sentences and their pauses (123 s)
    n = max(1, int(np.ceil(minutes * 60 / per_cycle_s)))
    return make_session(f"long-{minutes:g}min", SENTENCES * n)


def read_script(folder: Path) -> list[dict]:
    script = json.loads((folder / "script.json").read_text())
    if script and "speech_end" not in script[0]:
        script = add_speech_ends(folder)
    return script


# --------------------------------------------------------------------------- broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A throw-away mosquitto on a free 127.0.0.1 port (as tests/monitor/conftest.py starts one)."""

    def __init__(self, folder: Path) -> None:
        if MOSQUITTO is None:
            raise SystemExit("bench: the latency benchmark needs mosquitto (apt-get install mosquitto)")
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # wait for the listener
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited at start")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples this process's RSS every ``interval_s`` in a thread: ``samples`` = [(seconds, MiB)]."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            self.samples.append((round(time.monotonic() - t0, 2), round(rss_mb(), 1)))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.samples[-1][0] + self.interval_s if self.samples else 0.0, round(rss_mb(), 1)))


def rss_growth(samples: Sequence[tuple[float, float]], media_s: float) -> dict[str, Any]:
    """RSS growth over the second half of a run, after the first half warmed up allocators and caches.

    ``samples``: [(seconds since the run started, MiB)] over the whole run; ``media_s``: the media
    it replayed. Medians over a fifth of the second half ignore momentary peaks (a batch, a
    decoded chunk):

    * ``growth_mb`` = median of the last fifth - median of the first fifth of the second half
    * ``first_half_growth_mb`` = median of the first fifth of the second half - median over 10-20 %
      of the run (the warm-up climb, after the frame ring has filled)
    * ``slope_mb_per_10min`` = least-squares slope over the second half, per 10 minutes of media
    """
    t_end = samples[-1][0]
    half = [(t, mb) for t, mb in samples if t >= t_end / 2]
    n = max(1, len(half) // 5)
    warm = statistics.median(mb for _, mb in half[:n])
    last = statistics.median(mb for _, mb in half[-n:])
    early = [mb for t, mb in samples if 0.1 * t_end <= t <= 0.2 * t_end] or [samples[0][1]]
    slope = float(np.polyfit([t for t, _ in half], [mb for _, mb in half], 1)[0]) if len(half) > 2 else 0.0
    return {"growth_mb": round(last - warm, 1), "first_half_growth_mb": round(warm - statistics.median(early), 1),
            "slope_mb_per_10min": round(slope * t_end / media_s * 600, 1), "start_mb": samples[0][1],
            "second_half_start_mb": round(warm, 1), "end_mb": round(last, 1),
            "peak_mb": max(mb for _, mb in samples), "n_samples": len(samples)}


def thin(samples: Sequence[tuple[float, float]], n: int = 60) -> list[tuple[float, float]]:
    """At most ``n`` evenly spaced samples (for results.json)."""
    if len(samples) <= n:
        return list(samples)
    idx = np.linspace(0, len(samples) - 1, n).round().astype(int)
    return [samples[i] for i in idx]


# --------------------------------------------------------------------------- the monitor


@dataclass
class Monitor:
    """The loaded models of one bench process (load once, build a pipeline per run)."""

    transcriber: Any
    scorer: Any
    device: str
    faces_per_window: int  # ``[scorer] faces_per_window`` (0: the checkpoint's)
    faces_ahead: bool = True  # ``[scorer] faces_ahead``

    @property
    def features(self) -> Any:
        """The features the monitor's windows get: the scorer's, with ``faces_per_window`` frames searched for faces."""
        from mmsa.monitor.engine import window_features

        return window_features(self.scorer.features, self.faces_per_window or None)

    @classmethod
    def load(cls, model: str, device: str = "auto", runtime: str | None = None,
             faces_per_window: int | None = None, **asr: Any) -> Monitor:
        """Whisper and the scorer as ``mmsa-monitor --device DEVICE`` loads them (auto: CUDA when present);
        ``runtime`` and ``faces_per_window`` override those of ``[scorer]``; keywords that are not None override
        those of ``[asr]``, and ``cpu_threads`` also sets the threads of the audio branch's Whisper encoder
        (``mmsa.model.speech.THREADS``)."""
        from mmsa.model import load_checkpoint, speech
        from mmsa.monitor.asr import Transcriber
        from mmsa.monitor.config import AsrConfig, ScorerConfig
        from mmsa.monitor.scorer import Scorer, pick_torch_device

        sc = ScorerConfig()  # the monitor's default runtime (onnx: the graph from the user's cache)
        dev = pick_torch_device(device)
        scorer = Scorer(load_checkpoint(model, device=dev), dev, runtime=runtime or sc.runtime,
                        graph_cache=sc.graph_cache)
        asr = {k: v for k, v in asr.items() if v is not None}
        if "cpu_threads" in asr:
            speech.THREADS = asr["cpu_threads"]  # before the encoder's first use (the warm-up)
        return cls(Transcriber(dataclasses.replace(AsrConfig(), **asr), device), scorer, dev,
                   sc.faces_per_window if faces_per_window is None else faces_per_window)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"asr": f"faster-whisper tiny.en, CTranslate2 {self.transcriber.compute_type} on {self.transcriber.device}",
                "scorer": self.device, "scorer_runtime": self.scorer.runtime, "torch_threads": torch.get_num_threads(),
                "scorer_threads": getattr(self.scorer.model, "threads", None),
                "asr_threads": self.transcriber.cfg.cpu_threads, "word_timestamps": self.transcriber.word_timestamps,
                "segment_timestamps": self.transcriber.timestamps, "trim_margin_s": self.transcriber.cfg.trim_margin_s,
                "asr_prompt": self.transcriber.cfg.prompt, "asr_piece_min_s": self.transcriber.cfg.piece_min_s,
                "faces_per_window": self.features.frames_per_window, "faces_ahead": self.faces_ahead,
                "scorer_graph_split": getattr(self.scorer.model, "split", None)}

    def warm_up(self) -> None:
        """One transcription and one forward pass, so first-call costs stay out of the timings."""
        import torch

        from mmsa.model import Sample
        from mmsa.model.features import audio_features

        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(16_000 * 2) * 0.05).astype(np.float32)
        self.transcriber.transcribe(audio)
        crops = torch.from_numpy(rng.random((1, 1, 48, 48), np.float32))
        self.scorer.prepare(crops)
        self.scorer.score([Sample(text="warm up", audio=audio_features(audio, self.scorer.features), faces=crops)])

    def pipeline(self, media_path: Path, workdir: Path, *, fast: bool, mqtt: tuple[str, int, str] | None = None,
                 block_ms: int | None = None, **segmenter):
        """A Pipeline replaying ``media_path`` the way ``mmsa-monitor --replay PATH [--fast] --headless`` wires
        it (cli._build); ``mqtt`` = (host, port, prefix) adds the MQTT publisher; keywords that are not None
        override those of ``[segmenter]`` (``speculative=False``, ``early_close_ms=0``); ``block_ms`` that of
        ``[audio]``. -> (pipeline, publisher)."""
        import uuid

        from mmsa.monitor.bus import EventBus
        from mmsa.monitor.config import MonitorConfig
        from mmsa.monitor.engine import Engine
        from mmsa.monitor.mqtt import MqttPublisher
        from mmsa.monitor.pipeline import Pipeline
        from mmsa.monitor.replay import ReplaySource, open_replay
        from mmsa.monitor.session import EVENTS_FILE, SessionFolder
        from mmsa.monitor.sessionlog import SessionLog

        cfg = MonitorConfig().replace("segmenter", **{k: v for k, v in segmenter.items() if v is not None})
        cfg = cfg.replace("scorer", faces_per_window=self.faces_per_window, faces_ahead=self.faces_ahead)
        if block_ms is not None:
            cfg = cfg.replace("audio", block_ms=block_ms)
        if mqtt is not None:
            cfg = cfg.replace("mqtt", host=mqtt[0], port=mqtt[1], prefix=mqtt[2], node_id="bench",
                              client_id=f"bench-{uuid.uuid4().hex[:8]}", discovery=False)
        sources = [ReplaySource(open_replay(media_path), fast=fast, block=cfg.audio.block_samples)]
        session_id = str(uuid.uuid4())
        folder = SessionFolder.create(workdir / session_id[:8], session_id)
        bus = EventBus()
        session_log = SessionLog(folder.path / EVENTS_FILE)
        session_log.attach(bus)  # first, as the monitor attaches it: the log writes before MQTT sees an event
        publisher = MqttPublisher(cfg.mqtt, bus, folder.path / "outbox.sqlite") if mqtt is not None else None
        pipe = Pipeline(cfg, sources, engine=Engine(self.transcriber, self.scorer, cfg.scorer), bus=bus, folder=folder,
                        session_log=session_log)
        return pipe, publisher


async def run_monitor(pipe, publisher=None) -> None:
    """Run a pipeline (and its MQTT publisher) to the end, as ``mmsa-monitor --headless`` does."""
    from mmsa.monitor.pipeline import TaskGroup

    async with TaskGroup() as tg:
        if publisher is not None:
            tg.create_task(publisher.run(), name="mqtt")
        tg.create_task(pipe.run(), name="pipeline")


def read_events(pipe) -> list[dict]:
    from mmsa.monitor.sessionlog import read_lines

    return read_lines(pipe.log.path)

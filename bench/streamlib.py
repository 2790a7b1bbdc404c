"""Helpers of bench/streams.py: looped media files, monitor processes, and the figures of a run.

Looped media: a clip repeated ``k`` times, each copy followed by ``gap_s`` of silence (the video
holds its last frame through the gap), written once into .cache/bench as one file (H.264 video,
16 kHz PCM audio in Matroska), so that the streams of one process and the separate processes
replay exactly the same media. ``cut_s`` first shortens the clip (``--quick``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import CACHE, REPO, load_avg, say
from latency import parse_arrivals, pct

SAMPLE_RATE_HZ = 16_000
LOOP_FORMAT = 1  # bump when looped_media writes something else (the cache key)
PROC = REPO / "bench" / "monitor_proc.py"


# --------------------------------------------------------------------------- media


def speech_gap_cut(folder: Path, target_s: float) -> float | None:
    """Where to cut a generated session near ``target_s``: halfway through the pause after the last
    sentence that ends by then (script.json); None when the session is not longer than that."""
    script = json.loads((folder / "script.json").read_text())
    if script[-1]["t_end"] <= target_s:
        return None
    ends = [(i, s["t_end"]) for i, s in enumerate(script) if s["t_end"] <= target_s and i + 1 < len(script)]
    if not ends:
        return None
    i, t_end = ends[-1]
    return round((t_end + script[i + 1]["t_start"]) / 2, 3)


def looped_media(src: Path, k: int, gap_s: float = 1.0, cut_s: float | None = None, out_dir: Path = CACHE) -> Path:
    """``src`` (a media file or a session folder) up to ``cut_s``, ``k`` times with ``gap_s`` of silence after
    each copy, as one .mkv in ``out_dir`` (made once); ``src`` itself when there is nothing to change."""
    if k == 1 and cut_s is None:
        return src
    from mmsa.media import probe, read_frames
    from mmsa.monitor.replay import open_replay

    media = open_replay(src)
    stamp = f"{LOOP_FORMAT}:{src.resolve()}:{k}:{gap_s}:{cut_s}:{media.audio.size}:{media.video}"
    out = out_dir / f"looped-{src.stem}-{hashlib.sha256(stamp.encode()).hexdigest()[:10]}.mkv"
    if out.is_file():
        return out
    if media.video is None:
        raise SystemExit(f"bench: {src} has no video; the streams benchmark loops audio + video")
    fps = probe(media.video).fps or 30.0
    frames = [img for t, img in read_frames(media.video) if cut_s is None or t < cut_s]
    audio = media.audio[: int(cut_s * SAMPLE_RATE_HZ)] if cut_s is not None else media.audio
    n_unit = max(len(frames) + round(gap_s * fps), math.ceil((audio.size / SAMPLE_RATE_HZ + gap_s) * fps))
    unit = np.zeros(int(round(n_unit / fps * SAMPLE_RATE_HZ)), np.float32)
    unit[: audio.size] = audio
    h, w = frames[0].shape[:2]
    say(f"writing {out}: {src.name} x{k} ({k * n_unit / fps:.1f} s) ...")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pcm = Path(tmp) / "audio.f32"
        np.tile(unit, k).astype("<f4").tofile(pcm)
        part = out.with_suffix(".part.mkv")
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
               "-framerate", f"{fps:g}", "-i", "-", "-f", "f32le", "-ar", str(SAMPLE_RATE_HZ), "-ac", "1", "-i",
               str(pcm), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
               "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(part)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        unit_frames = frames + [frames[-1]] * (n_unit - len(frames))
        for _ in range(k):
            for img in unit_frames:
                proc.stdin.write(np.ascontiguousarray(img).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"bench: ffmpeg failed writing {part}")
        part.rename(out)
    return out


def media_seconds(path: Path) -> float:
    from mmsa.monitor.replay import open_replay

    return open_replay(path).duration_s


# --------------------------------------------------------------------------- monitor processes


def write_config(path: Path, sessions: Path, mqtt_prefix: str | None = None, node_id: str = "bench",
                 sections: dict[str, dict[str, Any]] | None = None) -> Path:
    """A monitor config: the session folders under ``sessions``; MQTT node id and topic prefix; ``sections``:
    section -> keys (booleans and numbers), e.g. ``{"scorer": {"faces_ahead": False}, "audio": {"block_ms": 32}}``."""
    lines = ["[session]", f'dir = "{sessions}"']
    if mqtt_prefix is not None:
        lines += ["", "[mqtt]", f'node_id = "{node_id}"', f'prefix = "{mqtt_prefix}"']
    for section, keys in (sections or {}).items():
        lines += ["", f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Proc:
    """One ``mmsa-monitor`` process started through bench/monitor_proc.py."""

    name: str
    popen: subprocess.Popen
    report: Path
    log: Path

    def result(self) -> dict[str, Any]:
        if self.popen.returncode != 0 or not self.report.is_file():
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SystemExit(f"bench: monitor {self.name} failed (exit {self.popen.returncode}): {' | '.join(tail)}")
        return json.loads(self.report.read_text())


def start_monitor(name: str, args: list[str], workdir: Path) -> Proc:
    """``mmsa-monitor ARGS`` (warmed up and observed: monitor_proc.py), its output in ``workdir/NAME.log``."""
    report, log = workdir / f"{name}.report.json", workdir / f"{name}.log"
    with log.open("w") as fh:
        popen = subprocess.Popen([sys.executable, str(PROC), str(report), *args], cwd=REPO, stdout=fh,
                                 stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return Proc(name, popen, report, log)


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Waited:
    """Processes run to their end: total CPU (start-up included), wall and load averages seen meanwhile."""

    cpu_s: float
    wall_s: float
    load_max_1min: float
    loads: list[list[float]] = field(default_factory=list)


def wait_all(procs: list[Proc], cpu0: float, t0: float, timeout_s: float) -> Waited:
    """Wait for every process (killing them after ``timeout_s``), sampling the load average every 2 s."""
    loads = [load_avg()]
    deadline = t0 + timeout_s
    while any(p.popen.poll() is None for p in procs):
        if time.monotonic() > deadline:
            for p in procs:
                if p.popen.poll() is None:
                    p.popen.kill()
            say("a monitor process ran past its time limit and was killed")
            break
        time.sleep(0.25)
        if time.monotonic() - t0 >= 2 * len(loads):
            loads.append(load_avg())
    for p in procs:
        p.popen.wait()
    loads.append(load_avg())
    return Waited(round(children_cpu_s() - cpu0, 2), round(time.monotonic() - t0, 2), max(x[0] for x in loads), loads)


def start_subscriber(host: str, port: int, prefix: str, out: Path) -> subprocess.Popen:
    """mosquitto_sub stamping every score and health message under ``prefix`` (and the probe) on arrival."""
    with out.open("w") as fh:
        return subprocess.Popen(["mosquitto_sub", "-h", host, "-p", str(port), "-q", "1", "-t", f"{prefix}/+/score",
                                 "-t", f"{prefix}/+/health", "-t", f"{prefix}/probe", "-F", "%U %t %p"], stdout=fh)


def need_mosquitto_sub() -> None:
    if shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None:
        raise SystemExit("bench: the streams benchmark needs mosquitto_sub and mosquitto_pub (mosquitto-clients)")


# --------------------------------------------------------------------------- figures


def read_events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def span(ev: dict) -> tuple[float, float]:
    return round(ev["t_start"], 2), round(ev["t_end"], 2)


def stream_figures(prefix: str, name: str, report: dict, arrivals_file: Path, expected: list[tuple[float, float]],
                   pad_s: float) -> dict[str, Any]:
    """One stream's events at the subscriber against the events expected; each event's latency =
    arrival - (origin + t_end - pad_s), the wall time at which the replay reached the speech end."""
    arrivals = parse_arrivals(arrivals_file, f"{prefix}/{name}/score")
    origin = report["origin_unix"]
    lat = [round((t - (origin + ev["t_end"] - pad_s)) * 1000, 1) for t, ev in arrivals] if origin else []
    got = [span(ev) for _, ev in arrivals]
    # lost: no event at all over an expected event's span (a window of the same speech cut otherwise, e.g. by
    # the adaptive close, still counts as arrived; ``n_other_spans`` counts those)
    missing = [s for s in expected if not any(min(s[1], g[1]) > max(s[0], g[0]) for g in got)]
    other = [s for s in expected if s not in set(got)]
    meta_path = Path(report["folder"]) / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    health = []
    for line in arrivals_file.read_text().splitlines():
        _, _, rest = line.partition(" ")
        topic, _, payload = rest.partition(" ")
        if topic == f"{prefix}/{name}/health":
            health.append(json.loads(payload))
    degraded = sorted({x for h in health for x in h.get("degraded", [])}, key=DEGRADE_ORDER.index)
    return {"n_expected": len(expected), "n_received": len(arrivals),
            "n_logged": len(read_events(Path(report["folder"]))), "missing": missing, "n_other_spans": len(other),
            "latency_ms": lat, "drops": meta.get("drops", {}),
            "max_shed": report["max_shed"], "degraded_seen": degraded,
            "max_behind_s": max((h.get("behind_s", 0.0) for h in health), default=None)}


DEGRADE_ORDER = ["partials", "speculation", "faces", "vision"]


def summarize(streams: dict[str, dict], max_p95_ms: float) -> dict[str, Any]:
    """Every stream's figures together: latency percentiles, events, drops, shedding; ``realtime``:
    p95 <= ``max_p95_ms`` and no expected event lost (no dropped final)."""
    lat = [x for s in streams.values() for x in s["latency_ms"]]
    drops: dict[str, int] = {}
    for s in streams.values():
        for k, v in s["drops"].items():
            drops[k] = drops.get(k, 0) + int(v)
    shed = sorted({x for s in streams.values() for x in s["max_shed"] + s["degraded_seen"]}, key=DEGRADE_ORDER.index)
    n_missing = sum(len(s["missing"]) for s in streams.values())
    p95 = pct(lat, 95)
    behind = [s["max_behind_s"] for s in streams.values() if s["max_behind_s"] is not None]
    return {"latency_p50_ms": pct(lat, 50), "latency_p95_ms": p95, "latency_max_ms": max(lat) if lat else None,
            "n_events_expected": sum(s["n_expected"] for s in streams.values()),
            "n_events_received": sum(s["n_received"] for s in streams.values()),
            "n_missing": n_missing, "n_other_spans": sum(s["n_other_spans"] for s in streams.values()),
            "drops": drops, "drops_total": sum(drops.values()), "shed": shed,
            "max_behind_s": max(behind) if behind else None,
            "realtime": p95 is not None and p95 <= max_p95_ms and n_missing == 0}

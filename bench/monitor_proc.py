"""``mmsa-monitor`` as bench/streams.py runs it: the real command line, warmed up, and observed.

    python bench/monitor_proc.py REPORT.json [mmsa-monitor options ...]

Runs ``mmsa.monitor.cli.main(options)`` unchanged (the same parsing, sources, shared engine,
streams, sinks and MQTT as ``mmsa-monitor``), with one wrapper around ``run_streams``, the call the
CLI makes once every stream is open and the models are loaded:

* (the CLI has warmed the models up: one transcription per Whisper worker and one forward pass,
  ``Engine.warm_up``, before any media time starts);
* after it, REPORT.json gets, per stream: its name, its session folder, its replay's origin (the
  Unix time at which media time 0 was due: ``ReplaySource.origin``, a ``time.monotonic()`` value,
  plus ``time.time() - time.monotonic()``; None for a ``--fast`` replay) and the load shed
  (``stream.extra["max_shed"]``); for the process: CPU seconds (this process and the children it
  reaped) and wall seconds of ``run_streams`` alone, Unix start and end, and its peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchlib import wall_offset


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (ffmpeg decoders)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def observed(real, report: Path):
    """``run_streams`` warmed up and observed (module docstring)."""

    async def run_streams(streams, engine, load, ui=None):
        cpu0, t0, unix0 = cpu_seconds(), time.monotonic(), time.time()
        try:
            return await real(streams, engine, load, ui)
        finally:
            wall_s, cpu_s = time.monotonic() - t0, cpu_seconds() - cpu0
            offset = wall_offset()
            out = {"cpu_s": round(cpu_s, 2), "wall_s": round(wall_s, 2), "start_unix": unix0,
                   "end_unix": unix0 + wall_s, "workers": getattr(engine.transcriber, "workers", 1),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "streams": []}
            for s in streams:
                src = s.pipeline.sources[0]
                origin = getattr(src, "origin", None)
                t0_media = src.media.audio_t0 if hasattr(src, "media") else 0.0
                out["streams"].append({"name": s.name, "folder": str(s.folder.path),
                                       "origin_unix": None if origin is None else origin + offset - t0_media,
                                       "max_shed": list(s.extra.get("max_shed", []))})
            report.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    return run_streams


def main() -> int:
    report, argv = Path(sys.argv[1]), sys.argv[2:]
    import mmsa.monitor.streams as streams_module
    from mmsa.monitor.cli import main as monitor_main

    streams_module.run_streams = observed(streams_module.run_streams, report)  # cli._run imports it when it runs
    return monitor_main(argv)


if __name__ == "__main__":
    sys.exit(main())

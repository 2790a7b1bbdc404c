"""Entry point ``mmsa-monitor`` (ARCHITECTURE section 8)."""

from __future__ import annotations

import argparse
import sys

from mmsa.model.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-monitor",
        description="Watch a person through a webcam and microphone (or replay a recording) and score "
        "every utterance on the CMU-MOSI sentiment scale (-3 .. +3). Subcommand: `mmsa-monitor report SESSION`.",
    )
    src = p.add_argument_group("sources")
    src.add_argument("--camera", metavar="INDEX|URL", help="camera index (0) or stream URL (rtsp://, http://)")
    src.add_argument("--mic", metavar="DEVICE", help="microphone device index or name (default: system default)")
    src.add_argument("--replay", metavar="PATH", help="replay a video, an audio file or a recorded session folder")
    src.add_argument("--fast", action="store_true", help="replay as fast as possible instead of in real time")
    out = p.add_argument_group("outputs")
    out.add_argument("--headless", action="store_true", help="no dashboard; log events to the terminal")
    out.add_argument("--mqtt", metavar="HOST[:PORT]", help="publish to this MQTT broker")
    out.add_argument("--mqtt-prefix", metavar="PREFIX", help="topic prefix (default mmsa-monitor/<node_id>)")
    out.add_argument("--jsonl", metavar="FILE", help="session log (default: inside the session folder)")
    out.add_argument("--record", metavar="DIR", help="record the session (video, audio, events) to DIR")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="default", help="default (embedded) or a checkpoint path")
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    m.add_argument("--config", metavar="FILE", help="monitor config TOML (see configs/monitor/)")
    return p


def _main(argv: list[str] | None) -> int:
    build_parser().parse_args(argv)
    print("mmsa-monitor: the live monitor is not built yet", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

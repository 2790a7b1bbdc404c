"""Entry point ``mmsa-monitor`` (ARCHITECTURE section 8), and ``mmsa-monitor report SESSION``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path

from mmsa.common.cli import run_cli
from mmsa.common.errors import MMSAError

from .config import MonitorConfig, load_config, parse_host_port
from .errors import MonitorError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("mmsa.monitor")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SESSION = REPO / "examples" / "sample-session"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-monitor",
        description="Watch a person through a webcam and microphone (or replay a recording) and score "
        "every utterance on the CMU-MOSI sentiment scale (-3 .. +3). Subcommands: `mmsa-monitor report SESSION`, "
        "`mmsa-monitor watch --mqtt HOST[:PORT]` (every monitor on a broker). "
        "With no source option it uses camera 0 and the default microphone when both exist, else it replays "
        "the sample session in examples/.",
    )
    src = p.add_argument_group("sources")
    src.add_argument("--camera", metavar="INDEX|URL", help="camera index (0) or stream URL (rtsp://, http://)")
    src.add_argument("--mic", metavar="DEVICE", help="microphone device index or name (default: system default)")
    src.add_argument("--replay", metavar="PATH", help="replay a video, an audio file or a recorded session folder")
    src.add_argument("--fast", action="store_true", help="replay as fast as possible instead of in real time")
    src.add_argument("--stream", metavar="NAME=SOURCE", action="append", default=[],
                     help="one of several streams (repeat): SOURCE a camera index or URL, mic, or a file or session "
                     "folder; options ,mic=DEVICE ,record=DIR. --replay FOLDER of recordings replays each as a stream")
    out = p.add_argument_group("outputs")
    out.add_argument("--headless", action="store_true", help="no dashboard; log events to the terminal")
    out.add_argument("--mqtt", metavar="HOST[:PORT]", help="publish to this MQTT broker")
    out.add_argument("--mqtt-prefix", metavar="PREFIX", help="topic prefix (default mmsa-monitor/<node_id>)")
    out.add_argument("--jsonl", metavar="FILE", help="session log (default: events.jsonl in the session folder)")
    out.add_argument("--record", metavar="DIR", help="record the session (video, audio, events) to DIR")
    out.add_argument("--metrics", metavar="[HOST:]PORT", help="serve Prometheus /metrics on this port (127.0.0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="default", help="default (embedded) or a checkpoint path")
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the models run")
    m.add_argument("--config", metavar="FILE", help="monitor config TOML (see configs/monitor/)")
    return p


def _say(text: str) -> None:
    print(f"mmsa-monitor: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


def _config(args: argparse.Namespace) -> MonitorConfig:
    cfg = load_config(args.config)
    if args.mqtt:
        host, port = parse_host_port(args.mqtt)
        cfg = cfg.replace("mqtt", host=host, port=port or cfg.mqtt.port)
    if args.mqtt_prefix:
        cfg = cfg.replace("mqtt", prefix=args.mqtt_prefix)
    if args.metrics:
        host, port = parse_host_port(args.metrics if ":" in args.metrics else f"{cfg.metrics.host}:{args.metrics}",
                                     what="--metrics")
        cfg = cfg.replace("metrics", host=host, port=port)
    return cfg


def _choose_source(args: argparse.Namespace) -> argparse.Namespace:
    """No source flag: camera 0 + default mic when both exist, else the sample session (said in one line)."""
    if args.replay or args.camera is not None or args.mic is not None:
        return args
    from .devices import camera_present, microphone_present

    cam, mic = camera_present(0), microphone_present(None)
    if cam and mic:
        args.camera = "0"
        return args
    missing = " and ".join(x for x, ok in (("camera", cam), ("microphone", mic)) if not ok)
    if not (SAMPLE_SESSION / "metadata.json").is_file():
        raise MonitorError(f"no {missing} found, and the sample session {SAMPLE_SESSION} is missing; "
                           "use --camera/--mic or --replay FILE")
    _say(f"no {missing} found: replaying the sample session {_rel(SAMPLE_SESSION)} "
         "(use --camera, --mic or --replay to choose a source)")
    args.replay = str(SAMPLE_SESSION)
    return args


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stream_configs(args: argparse.Namespace, cfg: MonitorConfig):
    """The streams to run: None for the one stream of --camera / --mic / --replay FILE (the classic monitor)."""
    from .streams import check_unique, folder_streams, is_recordings_folder, parse_stream

    streams = [*cfg.streams, *(parse_stream(text) for text in args.stream)]
    if args.replay and is_recordings_folder(args.replay):
        streams += folder_streams(args.replay)
        args.replay = None
    if not streams:
        return None
    if args.replay or args.camera is not None or args.mic is not None or args.record or args.jsonl:
        raise MonitorError("several streams: give each its sources with --stream NAME=SOURCE (or [[streams]] in "
                           "the config), not --camera/--mic/--replay/--record/--jsonl")
    check_unique(streams)
    return streams


def _open_sources(cfg: MonitorConfig, configs, fast: bool, clock) -> tuple[list, dict[str, str]]:
    """Each stream's sources (devices opened now: a missing one fails in one line); -> (opened, failures)."""
    from .sources import open_sources

    opened, failed = [], {}
    for sc in configs:
        try:
            sources, media = open_sources(cfg, clock, camera=sc.camera or None, mic=sc.mic or None,
                                          replay=sc.replay or None, fast=fast)
        except MMSAError as exc:
            if len(configs) == 1:
                raise
            failed[sc.name] = str(exc)
            _say(f"stream {sc.name}: {exc} (the other streams go on)")
            continue
        opened.append((sc, sources, media))
    if not opened:
        raise MonitorError("no stream could be opened")
    return opened, failed


def _engine(args: argparse.Namespace, cfg: MonitorConfig, n_streams: int):
    from mmsa.model import load_checkpoint

    from .asr import Transcriber
    from .engine import Engine
    from .scorer import Scorer, pick_torch_device

    device = pick_torch_device(args.device)
    workers = cfg.asr.workers or max(1, min(n_streams, os.cpu_count() or 1))
    _say(f"loading the models on {device} ...")
    sc = cfg.scorer
    scorer = Scorer(load_checkpoint(args.model, device=device, bert=sc.bert or None), device, runtime=sc.runtime,
                    graph_cache=sc.graph_cache or None, graph_build=sc.graph_build, face_members=sc.face_members)
    engine = Engine(Transcriber(cfg.asr, args.device, workers=workers), scorer, cfg.scorer)
    engine.warm_up()
    return engine


def _build(args: argparse.Namespace, cfg: MonitorConfig, configs) -> tuple[list, dict[str, str]]:
    """Sources first (a missing device fails before any model loads), then the shared models, then the streams."""
    from mmsa.model import read_info

    from .config import StreamConfig
    from .source import SessionClock
    from .stream import open_stream

    read_info(args.model)  # a missing or foreign checkpoint fails in one line before devices open
    single = configs is None
    if single:
        configs = [StreamConfig("single", camera=args.camera or "", mic=args.mic or "", replay=args.replay or "",
                                record=args.record or "")]
    opened, failed = _open_sources(cfg, configs, args.fast, SessionClock())
    streams = []
    try:
        engine = _engine(args, cfg, len(opened))
        shared: dict = {}
        for sc, sources, media in opened:
            streams.append(open_stream(cfg, sources, engine, name="" if single else sc.name, record=sc.record or None,
                                       jsonl=args.jsonl, headless=args.headless, replay_media=media, shared=shared,
                                       own_engine=False))
        if streams:
            streams[0].extra["shared"] = shared
    except BaseException:
        for _, sources, _ in opened:
            for src in sources:
                src.stop()
        for st in streams:
            st.close()
        raise
    return streams, failed


# --------------------------------------------------------------------------- running


def _load_dashboard():
    if importlib.util.find_spec("mmsa.monitor.dashboard") is None:
        return None
    from .dashboard import MonitorApp

    return MonitorApp


def _ui(streams, headless: bool):
    """The dashboard as ``run_streams`` wants it: one stream's own view, or the fleet view of several."""
    app_cls = None if headless else _load_dashboard()
    if not headless and app_cls is None:
        _say("the dashboard is not installed in this build: running headless")
    if app_cls is None:
        return None

    async def run(tg) -> None:
        if len(streams) == 1:
            app = app_cls(streams[0].bus, streams[0].pipeline, title=f"mmsa-monitor - {streams[0].pipeline.label}")
        else:
            from .config import node_id
            from .fleetview import FleetApp
            from .streams import StreamsControl, local_feed

            node = node_id(streams[0].pipeline.cfg.mqtt)
            app = FleetApp(local_feed(streams, node, tg), StreamsControl(streams),
                           title=f"mmsa-monitor - {len(streams)} streams")
        await app.run_async()

    return run


async def _run(streams, headless: bool) -> dict[str, str]:
    from .streams import run_streams

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupts = 0

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            _say("stopping: draining queues and flushing the log (Ctrl-C again to abort)")
            for s in streams:
                s.pipeline.request_stop()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    return await run_streams(streams, streams[0].pipeline.engine, streams[0].pipeline.cfg.load,
                             _ui(streams, headless))


def _unwrap(exc: BaseException) -> BaseException:
    """The first user-facing error inside (nested) exception groups, else the group itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _unwrap(inner)
            if isinstance(found, (MMSAError, KeyboardInterrupt)):
                return found
    return exc


def _parity_report(stream) -> None:
    media = stream.replay_media
    if media is None or media.events is None:
        return
    from .sessionlog import compare_events

    _say(compare_events(media.events, stream.pipeline.log.path))


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["watch"]:  # no model, no torch: before flush_denormals
        from .watch import main as watch_main

        return watch_main(argv[1:])
    from mmsa.model.runtime import flush_denormals

    flush_denormals()  # before torch starts its threads, which inherit the setting
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    args = build_parser().parse_args(argv)
    cfg = _config(args)
    configs = _stream_configs(args, cfg)
    if configs is None:
        args = _choose_source(args)
    streams, failed = _build(args, cfg, configs)
    for st in streams:
        mqtt = st.mqtt
        _say(f"{f'[{st.name}] ' if st.name else ''}{st.pipeline.label} -> {_rel(st.folder.path)} (model "
             f"{st.pipeline.engine.tag}, {st.pipeline.engine.device})" + (f", MQTT {mqtt.address}" if mqtt else ""))
    try:
        failed.update(asyncio.run(_run(streams, args.headless)))
    except BaseException as exc:  # noqa: BLE001 - unwrap task-group errors into one clear line
        inner = _unwrap(exc)
        if inner is exc:
            if isinstance(exc, asyncio.CancelledError):
                _say("aborted")
                return 130
            raise
        raise inner from None
    finally:
        for st in streams:
            st.close()
        from .sinks import close_shared

        close_shared(streams[0].extra.get("shared", {}))
    outputs_failed = _after(streams, headless=args.headless)
    for name, why in failed.items():
        _say(f"stream {name} failed: {why}")
    return 1 if failed or outputs_failed else 0


def _after(streams, *, headless: bool) -> bool:
    """What each stream leaves behind, in a line or two; True when an output failed (the exit status says so)."""
    outputs_failed = False
    for st in streams:
        head = f"[{st.name}] " if st.name else ""
        for name, why in st.pipeline.bus.failed.items():
            outputs_failed = True
            lost = (f": {st.pipeline.n_events - st.pipeline.log.n_events} of {st.pipeline.n_events} events are not in "
                    f"{_rel(st.pipeline.log.path)}" if name == "jsonl" else "")
            _say(f"{head}the {name} output failed ({why}){lost}")
        if not headless and _load_dashboard() is not None:  # headless: the printer has said it
            _say(f"{head}{st.pipeline.n_events} events in {_rel(st.pipeline.log.path)}")
        mqtt = st.mqtt
        if mqtt is not None and mqtt.undelivered:
            _say(f"{head}MQTT: {mqtt.undelivered} event(s) not delivered to {mqtt.address}; they are in "
                 f"{_rel(mqtt.outbox.path)} and the session log")
        if st.extra.get("max_shed"):
            _say(f"{head}the machine could not keep up: shed {', '.join(st.extra['max_shed'])} for a while")
        _parity_report(st)
    return outputs_failed


def _report(rest: list[str]) -> int:
    if importlib.util.find_spec("mmsa.monitor.report") is None:
        print("mmsa-monitor report: not available in this build (mmsa.monitor.report is missing)", file=sys.stderr)
        return 2
    from .report import main as report_main

    return int(report_main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

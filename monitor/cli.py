"""Entry point ``mmsa-monitor`` (ARCHITECTURE section 8), and ``mmsa-monitor report SESSION``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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
    out = p.add_argument_group("outputs")
    out.add_argument("--headless", action="store_true", help="no dashboard; log events to the terminal")
    out.add_argument("--mqtt", metavar="HOST[:PORT]", help="publish to this MQTT broker")
    out.add_argument("--mqtt-prefix", metavar="PREFIX", help="topic prefix (default mmsa-monitor/<node_id>)")
    out.add_argument("--jsonl", metavar="FILE", help="session log (default: events.jsonl in the session folder)")
    out.add_argument("--record", metavar="DIR", help="record the session (video, audio, events) to DIR")
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
    return cfg


def _choose_source(args: argparse.Namespace) -> argparse.Namespace:
    """No source flag: camera 0 + default mic when both exist, else the sample session (said in one line)."""
    if args.replay or args.camera is not None or args.mic is not None:
        return args
    from .sources import camera_present, microphone_present

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


@dataclass
class Session:
    pipeline: Any
    bus: Any
    mqtt: Any
    replay_media: Any
    folder: Any
    log_handler: logging.Handler

    def close(self) -> None:
        logging.getLogger("mmsa").removeHandler(self.log_handler)
        self.log_handler.close()


def _open_sources(args: argparse.Namespace, cfg: MonitorConfig, clock):
    from mmsa.model.features import SAMPLE_RATE_HZ

    from .pipeline import Sources
    from .sources import CameraSource, MicSource, ReplaySource, open_replay

    block = max(1, cfg.audio.block_ms * SAMPLE_RATE_HZ // 1000)
    if args.replay:
        media = open_replay(args.replay)
        return Sources(replay=ReplaySource(media, fast=args.fast, block=block)), media
    if args.fast:
        raise MonitorError("--fast only applies to a replay (--replay PATH)")
    camera = None
    if args.camera is not None:
        f = cfg.frames
        camera = CameraSource(args.camera, clock, max_fps=f.camera_max_fps, lost_s=f.camera_lost_s,
                              retry_s=f.camera_retry_s)
        camera.open()
    mic = MicSource(args.mic, clock, block=block)
    mic.open()
    return Sources(mic=mic, camera=camera), None


def _build(args: argparse.Namespace, cfg: MonitorConfig) -> Session:
    from mmsa.model import load_checkpoint, read_info

    from .asr import Transcriber
    from .events import EventBus
    from .mqtt import MqttPublisher
    from .pipeline import Pipeline
    from .recorder import EVENTS_FILE, Recorder, SessionFolder
    from .scorer import Scorer, pick_torch_device
    from .sessionlog import SessionLog
    from .sources import SessionClock

    read_info(args.model)  # a missing or foreign checkpoint fails in one line before devices open
    device = pick_torch_device(args.device)
    sources, media = _open_sources(args, cfg, SessionClock())
    handler: logging.Handler | None = None
    try:
        _say(f"loading the models on {device} ...")
        scorer = Scorer(load_checkpoint(args.model, device=device, bert=cfg.scorer.bert or None), device)
        transcriber = Transcriber(cfg.asr, args.device)
        session_id = str(uuid.uuid4())
        if args.record:
            folder = SessionFolder.create(args.record, session_id)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            folder = SessionFolder.create(Path(cfg.session.dir) / f"{stamp}-{session_id[:8]}", session_id)
        handler = _log_to(folder.path / "monitor.log")
        jsonl = Path(args.jsonl) if args.jsonl else folder.path / EVENTS_FILE
        session_log = SessionLog(jsonl)
        folder.update(
            source=sources.label, model=scorer.tag, device=device,
            asr=f"{transcriber.device} {transcriber.compute_type}",
            events=EVENTS_FILE if jsonl.resolve().parent == folder.path.resolve() else str(jsonl.resolve()),
            config=_plain(cfg),
        )
        recorder = None
        if args.record:
            fps = cfg.frames.camera_max_fps if sources.live else 30.0
            recorder = Recorder(folder, cfg.session.record_crf, nominal_fps=fps)
        bus = EventBus()
        mqtt = None
        if cfg.mqtt.host:
            mqtt = MqttPublisher(cfg.mqtt, bus, cfg.mqtt.outbox or folder.path / "outbox.sqlite")
        pipeline = Pipeline(cfg, sources, transcriber=transcriber, scorer=scorer, bus=bus, folder=folder,
                            session_log=session_log, session_id=session_id, recorder=recorder)
        if mqtt is not None:
            pipeline.extra_drops["mqtt_outbox"] = lambda: mqtt.outbox.dropped
    except BaseException:
        for dev in (sources.camera, sources.mic):
            if dev is not None:
                dev.stop()
        if handler is not None:
            logging.getLogger("mmsa").removeHandler(handler)
            handler.close()
        raise
    return Session(pipeline, bus, mqtt, media, folder, handler)


def _plain(cfg: MonitorConfig) -> dict:
    from mmsa.common.settings import to_dict

    d = to_dict(cfg)
    for secret in ("password_file", "password_env", "username"):
        d["mqtt"].pop(secret, None)
    return d


def _log_to(path: Path) -> logging.Handler:
    """Log the session (INFO and up) to monitor.log in its folder; the terminal belongs to the UI."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mmsa")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


# --------------------------------------------------------------------------- running


def _event_line(ev) -> str:
    mods = " ".join(
        f"{m[0]}={'-' if v.score is None else f'{v.score:+.2f}'}" for m, v in ev.modalities.items()
    )
    return (f"[{ev.t_start:7.2f}-{ev.t_end:7.2f}] {ev.score:+.2f} {ev.polarity:8s} conf {ev.confidence:.2f}  "
            f"{mods}  {ev.latency_ms['total']:.0f} ms  \"{ev.text}\"")


async def _print_events(bus) -> None:
    from .events import MonitorStatus, ScoreEvent

    q = bus.subscribe()
    last_msg = ""
    while (item := await q.get()) is not None:
        if isinstance(item, ScoreEvent):
            print(_event_line(item), flush=True)
        elif isinstance(item, MonitorStatus) and item.message and item.message != last_msg:
            last_msg = item.message
            _say(item.message)


def _load_dashboard():
    if importlib.util.find_spec("mmsa.monitor.dashboard") is None:
        return None
    from .dashboard import MonitorApp

    return MonitorApp


async def _run(session: Session, headless: bool) -> None:
    from .pipeline import TaskGroup

    pipeline, bus = session.pipeline, session.bus
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupts = 0

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            _say("stopping: draining queues and flushing the log (Ctrl-C again to abort)")
            pipeline.request_stop()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    app_cls = None if headless else _load_dashboard()
    if not headless and app_cls is None:
        _say("the dashboard is not installed in this build: running headless")
    async with TaskGroup() as tg:
        if session.mqtt is not None:
            tg.create_task(session.mqtt.run(), name="mqtt")
        if app_cls is None:
            tg.create_task(_print_events(bus), name="printer")
            tg.create_task(pipeline.run(), name="pipeline")
        else:
            app = app_cls(bus, pipeline, title=f"mmsa-monitor - {pipeline.sources.label}")
            tg.create_task(pipeline.run(), name="pipeline")
            await app.run_async()
            pipeline.request_stop()  # the user quit (a replay may have ended before); the group waits for the drain


def _unwrap(exc: BaseException) -> BaseException:
    """The first user-facing error inside (nested) exception groups, else the group itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _unwrap(inner)
            if isinstance(found, (MMSAError, KeyboardInterrupt)):
                return found
    return exc


def _parity_report(session: Session) -> None:
    media = session.replay_media
    if media is None or media.events is None:
        return
    from .sessionlog import compare_events

    _say(compare_events(media.events, session.pipeline.log.path))


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
    args = _choose_source(args)
    session = _build(args, cfg)
    _say(f"{session.pipeline.sources.label} -> {_rel(session.folder.path)} (model {session.pipeline.scorer.tag}, "
         f"{session.pipeline.scorer.device})" + (f", MQTT {session.mqtt.address}" if session.mqtt else ""))
    try:
        asyncio.run(_run(session, args.headless))
    except BaseException as exc:  # noqa: BLE001 - unwrap task-group errors into one clear line
        inner = _unwrap(exc)
        if inner is exc:
            if isinstance(exc, asyncio.CancelledError):
                _say("aborted")
                return 130
            raise
        raise inner from None
    finally:
        session.close()
    if not args.headless and _load_dashboard() is not None:  # headless: the printer has said it
        _say(f"{session.pipeline.n_events} events in {_rel(session.pipeline.log.path)}")
    if session.mqtt is not None and session.mqtt.undelivered:
        _say(f"MQTT: {session.mqtt.undelivered} event(s) not delivered to {session.mqtt.address}; they are in "
             f"{_rel(session.mqtt.outbox.path)} and the session log")
    _parity_report(session)
    return 0


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

"""The ``mmsa-monitor`` command: the "done when" run, Ctrl-C, the Last Will, bad input and fallbacks."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess

import pytest

from mmsa.monitor import cli
from mmsa.monitor.devices import camera_present, microphone_present
from mmsa.monitor.events import validate_event
from mmsa.monitor.sessionlog import read_lines
from tests.conftest import REPO
from tests.monitor.conftest import Subscriber, monitor_cmd, run_cli

SAMPLE = REPO / "examples" / "sample-session"


def run_main(argv, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- with a broker


@pytest.mark.broker
def test_done_when_replay_headless_events_seen_by_mosquitto_sub(broker, tiny_checkpoint, tmp_path):
    """`mmsa-monitor --replay examples/<sample> --headless --mqtt 127.0.0.1:PORT` -> mosquitto_sub sees contract events."""
    if shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None:
        pytest.skip("needs mosquitto-clients")
    prefix = "done/when"
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-v",
                            "-t", f"{prefix}/#"], stdout=subprocess.PIPE, text=True)
    try:
        # mosquitto_sub is subscribed once it prints a retained message published for that purpose
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-r", "-q", "1",
                        "-t", f"{prefix}/ready", "-m", "yes"], check=True)
        assert sub.stdout is not None
        assert sub.stdout.readline().strip() == f"{prefix}/ready yes"
        res = run_cli("--replay", str(SAMPLE), "--fast", "--headless", "--mqtt", broker.address,
                      "--mqtt-prefix", prefix, "--model", str(tiny_checkpoint), "--jsonl", str(tmp_path / "e.jsonl"),
                      cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        lines = []
        while (line := sub.stdout.readline()) and line.strip() != f"{prefix}/status offline":
            lines.append(line.strip())
    finally:
        sub.kill()
        sub.communicate()
    scores = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith(f"{prefix}/score ")]
    for d in scores:
        validate_event(d)
    assert len(scores) >= 6 and scores == read_lines(tmp_path / "e.jsonl")
    assert f"{prefix}/status online" in lines and any(x.startswith(f"{prefix}/state ") for x in lines)
    printed = [x for x in res.stdout.splitlines() if x.startswith("[")]
    assert len(printed) == len(scores)  # headless: one terminal line per event


def start_monitor(tmp_path, broker, ckpt, prefix: str) -> subprocess.Popen:
    return subprocess.Popen(
        monitor_cmd("--replay", str(SAMPLE), "--headless", "--mqtt", broker.address, "--mqtt-prefix", prefix,
                    "--model", str(ckpt), "--jsonl", str(tmp_path / "e.jsonl")),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.broker
async def test_ctrl_c_drains_flushes_publishes_offline_and_exits_0(broker, tiny_checkpoint, tmp_path):
    async with Subscriber(broker, ["ctrlc/#"]) as sub:
        proc = start_monitor(tmp_path, broker, tiny_checkpoint, "ctrlc")
        try:
            await sub.wait_for(lambda s: s.on("ctrlc/score"), timeout=120)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        await sub.wait_for(lambda s: b"offline" in s.on("ctrlc/status"))
    logged = read_lines(tmp_path / "e.jsonl")
    assert 1 <= len(logged) < 8 and [json.loads(p) for p in sub.on("ctrlc/score")] == logged
    assert "Traceback" not in err and "stopping" in err


@pytest.mark.broker
async def test_a_killed_monitor_leaves_offline_through_its_last_will(broker, tiny_checkpoint, tmp_path):
    async with Subscriber(broker, ["will/status"]) as sub:
        proc = start_monitor(tmp_path, broker, tiny_checkpoint, "will")
        try:
            await sub.wait_for(lambda s: b"online" in s.on("will/status"), timeout=120)
        finally:
            proc.kill()
            proc.communicate()
        await sub.wait_for(lambda s: s.on("will/status")[-1:] == [b"offline"])


# --------------------------------------------------------------------------- faults and bad input


def test_corrupt_media_is_one_line_and_a_non_zero_exit(tmp_path, speech_clip, tiny_checkpoint):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(speech_clip.read_bytes()[: speech_clip.stat().st_size // 3])
    for path in (junk, truncated):
        res = run_cli("--replay", str(path), "--headless", "--model", str(tiny_checkpoint), cwd=tmp_path)
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert "Traceback" not in res.stderr and len(lines) == 1 and str(path) in lines[0], res.stderr


@pytest.mark.parametrize("args, message, code", [
    (["--replay", "nowhere.mp4"], "nowhere.mp4: not found", 1),
    (["--camera", "9"], "camera: no camera at index 9", 1),
    (["--camera", "0", "--fast"], "--fast only applies to a replay", 1),
    (["--mic", "99"], "microphone: ", 1),
])
def test_bad_sources_are_one_clear_line(args, message, code, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    got, err = run_main([*args, "--headless", "--model", tiny_checkpoint], capsys)
    assert got == code and message in err and err.strip().count("\n") == 0, err


def test_missing_default_model_is_one_line(tmp_path, monkeypatch, capsys, speech_clip):
    import mmsa.model.resources

    # as in a checkout where it was never built (the repo ships it)
    monkeypatch.setattr(mmsa.model.resources, "DEFAULT_CHECKPOINT", tmp_path / "default.safetensors")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["--replay", speech_clip, "--headless"], capsys)
    assert code == 1 and "default model is missing" in err and err.strip().count("\n") == 0


def test_bad_config_key_exits_2(tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_text("[mqtt]\nhots = 'x'\n")
    code, err = run_main(["--config", cfg, "--headless"], capsys)
    assert code == 2 and "mqtt.hots: unknown key" in err


def test_report_dispatches_or_says_it_is_missing(capsys):
    import importlib.util

    if importlib.util.find_spec("mmsa.monitor.report") is None:
        assert cli.main(["report", "somewhere"]) == 2
        assert "mmsa.monitor.report is missing" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as exc:
            cli.main(["report", "--help"])
        assert exc.value.code == 0


def test_no_camera_or_microphone_replays_the_sample_and_says_so(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    if camera_present(0) and microphone_present(None):
        pytest.skip("this machine has a camera and a microphone")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["--headless", "--fast", "--model", tiny_checkpoint, "--jsonl", tmp_path / "e.jsonl"], capsys)
    assert code == 0, err
    assert "replaying the sample session" in err
    assert len(read_lines(tmp_path / "e.jsonl")) == 8


def test_record_then_replay_reproduces_the_scores(speech_clip, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["--replay", speech_clip, "--fast", "--headless", "--model", tiny_checkpoint,
                          "--record", tmp_path / "rec"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "rec" / "metadata.json").read_text())
    assert {"audio", "video", "frame_times", "events", "model", "ended"} <= set(meta)
    assert "record_dropped" not in meta  # recording a replay waits for the writer: nothing lost on a busy machine
    code, err = run_main(["--replay", tmp_path / "rec", "--fast", "--headless", "--model", tiny_checkpoint], capsys)
    assert code == 0, err
    assert "replay reproduced 3/3 recorded scores" in err

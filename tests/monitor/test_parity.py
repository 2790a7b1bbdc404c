"""Live scoring == offline scoring: the pipeline's window of a clip vs mmsa.media.clip_sample / mmsa-eval."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmsa.media import FaceDetector, clip_sample
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.engine import window_features
from mmsa.monitor.scorer import Scorer
from tests.monitor.conftest import replay_sources
from tests.monitor.test_pipeline import Collector

WHOLE_CLIP = MonitorConfig().replace("segmenter", mode="continuous", max_window_s=30.0, hop_s=30.0)
FACES = MonitorConfig().scorer.faces_per_window  # frames per window the monitor searches for faces (4)


def offline_sample(path, text, loaded, faces_per_window: int = FACES):
    """The clip's model input as mmsa.media.clip_sample makes it offline, with the monitor's faces per window."""
    return clip_sample(path, text, FaceDetector(), cfg=window_features(loaded.features, faces_per_window or None))


async def score_whole_clip(make_pipeline, path, cfg: MonitorConfig = WHOLE_CLIP):
    pipe, bus, _ = make_pipeline(replay_sources(path), cfg=cfg)
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    (event,) = seen.events
    return event


@pytest.mark.parametrize("faces_per_window", [FACES, 0])
async def test_pipeline_scores_a_clip_like_clip_sample_and_the_model(make_pipeline, speech_clip, loaded_tiny,
                                                                     faces_per_window):
    """The monitor's faces per window (4), and 0: the checkpoint's (8, what clip_sample and mmsa-eval use)."""
    cfg = WHOLE_CLIP.replace("scorer", faces_per_window=faces_per_window)
    event = await score_whole_clip(make_pipeline, speech_clip, cfg)
    sample = offline_sample(speech_clip, event.text, loaded_tiny, faces_per_window)
    (offline,) = Scorer(loaded_tiny, "cpu").score([sample])
    assert len(sample.faces) == (faces_per_window or loaded_tiny.features.frames_per_window)  # a face in every frame
    assert event.t_start == 0.0 and event.modalities["vision"].face_frames == len(sample.faces)
    assert event.score == pytest.approx(offline.score, abs=1e-4)
    for m, s in offline.unimodal.items():
        assert event.modalities[m].score == pytest.approx(s, abs=1e-4)


async def test_pipeline_scores_a_clip_like_mmsa_eval(make_pipeline, speech_clip, tiny_checkpoint, tmp_path):
    """mmsa-eval (mmsa-raw layout, label text = the pipeline's transcript) predicts the same score as the monitor
    searching the checkpoint's frames per window for faces (``[scorer] faces_per_window = 0``)."""
    event = await score_whole_clip(make_pipeline, speech_clip, WHOLE_CLIP.replace("scorer", faces_per_window=0))
    raw = tmp_path / "raw"
    (raw / "Raw" / "clipvid").mkdir(parents=True)
    shutil.copy(speech_clip, raw / "Raw" / "clipvid" / "1.mp4")
    with (raw / "label.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        w.writerow(["clipvid", "1", event.text, "0.0", "Neutral", "test"])
    script = Path(sys.executable).with_name("mmsa-eval")
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from mmsa.training.cli import eval_main; sys.exit(eval_main())"]
    res = subprocess.run(
        [*cmd, "--model", str(tiny_checkpoint), "--dataset", "mmsa-raw", "--labels", str(raw / "label.csv"),
         "--root", str(raw), "--split", "test", "--out", str(tmp_path / "m.json"),
         "--predictions", str(tmp_path / "p.csv"), "--device", "cpu", "--cache", str(tmp_path / "cache"),
         "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )
    if res.returncode != 0 and ("not built yet" in res.stderr or "unrecognized arguments" in res.stderr):
        pytest.skip(f"mmsa-eval's mmsa-raw path is not ready: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stderr
    with (tmp_path / "p.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["pred"]) == pytest.approx(event.score, abs=1e-4)

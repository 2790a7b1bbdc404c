"""bench/streams.py's measurement chain (issue #13's benchmark), on a short clip with the tiny model.

No timing is asserted: these check that the benchmark measures what it says (looped media are the
clip repeated, every event of every stream is counted, and a latency is measured from the replay's
own clock), in one monitor process and in separate ones.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import pytest

from mmsa.media import read_frames
from mmsa.monitor.config import SegmenterConfig
from mmsa.monitor.replay import open_replay
from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    """bench/streams.py and bench/streamlib.py as modules (the bench scripts import each other by name)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module("streams"), importlib.import_module("streamlib")
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_looped_media_is_the_clip_repeated_with_silence_between(bench, tmp_path, speech_clip):
    _, streamlib = bench
    out = streamlib.looped_media(speech_clip, 3, gap_s=1.0, out_dir=tmp_path)
    src, looped = open_replay(speech_clip), open_replay(out)
    n = looped.audio.size // 3  # samples per copy (clip + gap)
    assert looped.audio.size == 3 * n
    assert src.audio.size + 16_000 <= n <= src.audio.size + 16_000 + 1_600  # the gap, up to a frame more
    for i in range(3):
        copy = looped.audio[i * n : (i + 1) * n]
        assert np.abs(copy[: src.audio.size] - src.audio).max() < 1e-3  # 16-bit PCM of the same samples
        assert np.abs(copy[src.audio.size :]).max() < 1e-3  # silence
    frames = list(read_frames(out))
    per_copy = len(frames) // 3
    assert len(frames) == 3 * per_copy and per_copy == round(n / 16_000 * 10)  # 10 fps, as the clip
    assert all(b[0] > a[0] for a, b in zip(frames, frames[1:]))
    first, third = frames[5][1].astype(np.float32), frames[2 * per_copy + 5][1].astype(np.float32)
    assert np.abs(first - third).mean() < 2.0  # the same picture (H.264 at CRF 18)
    assert streamlib.looped_media(speech_clip, 3, gap_s=1.0, out_dir=tmp_path) == out  # made once
    assert streamlib.looped_media(speech_clip, 1) == speech_clip  # nothing to change: the clip itself


def test_a_quick_cut_falls_in_the_pause_after_a_sentence(bench, tmp_path):
    _, streamlib = bench
    script = [{"t_start": 0.6, "t_end": 3.8}, {"t_start": 5.0, "t_end": 8.8}, {"t_start": 10.0, "t_end": 13.5}]
    (tmp_path / "script.json").write_text(json.dumps(script))
    assert streamlib.speech_gap_cut(tmp_path, 9.5) == pytest.approx((8.8 + 10.0) / 2)
    assert streamlib.speech_gap_cut(tmp_path, 4.0) == pytest.approx((3.8 + 5.0) / 2)
    assert streamlib.speech_gap_cut(tmp_path, 20.0) is None  # shorter than the target: not cut


@pytest.mark.broker
def test_one_process_and_separate_processes_count_and_time_every_event(bench, broker, tmp_path, speech_clip,
                                                                       speech_script, tiny_checkpoint):
    streams, _ = bench
    media = [{"name": "clip", "path": speech_clip, "seconds": open_replay(speech_clip).duration_s}]
    expected, _ = streams.expected_events(media, str(tiny_checkpoint), tmp_path)
    assert len(expected["clip"]) == len(speech_script)  # one event per sentence in the --fast replay
    seg = SegmenterConfig()
    for mode in streams.MODES:
        r = streams.run_once(mode, 2, media, expected, str(tiny_checkpoint), broker, tmp_path, seg.end_pad_ms / 1000)
        assert r["n_missing"] == 0 and r["n_events_received"] == r["n_events_expected"] == 2 * len(speech_script), mode
        assert r["asr_workers"] == ([min(2, os.cpu_count() or 1)] if mode == "in_process" else [1, 1])
        assert r["cpu_s"] > 0 and r["rss_mb"] > 0 and r["drops_total"] == 0
        for s in r["streams"].values():
            assert s["n_received"] == s["n_logged"] == len(s["latency_ms"]) == len(speech_script)
            # an utterance closes once the VAD has heard early_close_ms (after a sentence) or min_silence_ms of
            # silence after the speech, on the replay's clock: an event measured earlier would mean a wrong origin
            assert min(s["latency_ms"]) >= min(seg.early_close_ms or seg.min_silence_ms, seg.min_silence_ms) - 50, (
                mode, s["latency_ms"])

import numpy as np
import pytest

from mmsa.media import load_audio
from mmsa.monitor.config import SegmenterConfig
from mmsa.monitor.vad import WINDOW, Segmenter, SileroVAD

SR = 16_000


@pytest.fixture(scope="module")
def speech(clip_dir):
    folder, script = clip_dir
    return load_audio(folder / "speech.wav"), script


def push_in_chunks(seg: Segmenter, audio: np.ndarray, rng: np.random.Generator):
    out, i = [], 0
    while i < audio.size:
        n = int(rng.integers(1, 3000))
        seg.push(audio[i : i + n])
        i += n
        out += seg.ready()
    return out + seg.flush()


def test_streaming_probabilities_equal_faster_whispers_whole_recording(speech):
    from faster_whisper.vad import get_vad_model

    audio = speech[0]
    n = audio.size // WINDOW * WINDOW
    whole = get_vad_model()(audio[:n]).reshape(-1)
    vad, got, pending = SileroVAD(), [], np.zeros(0, np.float32)
    for start in range(0, n, 777):  # chunks that do not line up with the 512-sample windows
        pending = np.concatenate([pending, audio[start : min(start + 777, n)]])
        k = pending.size // WINDOW
        if k:
            got.append(vad(pending[: k * WINDOW].reshape(k, WINDOW)))
            pending = pending[k * WINDOW :]
    np.testing.assert_allclose(np.concatenate(got), whole, atol=1e-6)


def test_segmenter_finds_each_sentence(speech):
    audio, script = speech
    segs = push_in_chunks(Segmenter(SegmenterConfig(), SileroVAD()), audio, np.random.default_rng(0))
    assert [s.final for s in segs] == [True] * len(script)
    for s, line in zip(segs, script):
        t0, t1 = s.start / SR, s.end / SR
        assert t0 <= line["t_start"] + 0.3 and t1 >= line["t_end"] - 0.3, (t0, t1, line)
        assert t1 - t0 < line["t_end"] - line["t_start"] + 1.0
        np.testing.assert_array_equal(s.audio, audio[s.start : s.end])


def test_chunking_does_not_change_the_segments(speech):
    audio = speech[0]
    a = push_in_chunks(Segmenter(SegmenterConfig(), SileroVAD()), audio, np.random.default_rng(0))
    seg = Segmenter(SegmenterConfig(), SileroVAD())
    seg.push(audio)
    b = seg.ready() + seg.flush()
    assert [(s.start, s.end) for s in a] == [(s.start, s.end) for s in b]


def test_long_speech_is_cut_into_sliding_windows(speech):
    audio, script = speech
    cfg = SegmenterConfig(max_window_s=1.0, hop_s=0.5)
    segs = push_in_chunks(Segmenter(cfg, SileroVAD()), audio, np.random.default_rng(2))
    partial = [s for s in segs if not s.final]
    assert len(partial) >= 3 * len(script)
    assert all(s.end - s.start == SR for s in partial)
    first_utt = [s for s in partial if s.speech_start == partial[0].speech_start]
    assert [s.start - first_utt[0].start for s in first_utt[:3]] == [0, SR // 2, SR]
    assert sum(s.final for s in segs) == len(script)


def test_continuous_mode_cuts_windows_without_a_vad():
    audio = np.random.default_rng(0).standard_normal(int(SR * 2.5)).astype(np.float32)
    seg = Segmenter(SegmenterConfig(mode="continuous", max_window_s=1.0, hop_s=0.5))
    seg.push(audio)
    windows = [(s.start / SR, s.end / SR, s.final) for s in seg.ready() + seg.flush()]
    assert windows == [(0.0, 1.0, False), (0.5, 1.5, False), (1.0, 2.0, False), (1.5, 2.5, False)]
    short = Segmenter(SegmenterConfig(mode="continuous"))
    short.push(audio)
    assert [(s.start, s.end, s.final) for s in short.ready() + short.flush()] == [(0, audio.size, True)]


def test_flush_closes_an_open_utterance_and_silence_keeps_memory_bounded(speech):
    audio, script = speech
    seg = Segmenter(SegmenterConfig(), SileroVAD())
    cut = int((script[0]["t_start"] + 1.0) * SR)  # stop in the middle of the first sentence
    seg.push(audio[:cut])
    assert seg.speaking and seg.ready() == []
    (s,) = seg.flush()
    assert s.final and s.end == cut and not seg.speaking
    quiet = Segmenter(SegmenterConfig(), SileroVAD())
    for _ in range(200):
        quiet.push(np.zeros(4096, np.float32))
    assert quiet.ready() == [] and quiet._buf.size < 2 * SR  # noqa: SLF001 - the bound under test

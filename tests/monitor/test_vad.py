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


def test_sixteen_ms_decisions_are_two_interleaved_streams_of_the_models_own_windows(speech):
    # hop 256: window k starts at 256 k; the even ones are the model's stream from sample 0, the odd ones its stream
    # from sample 256, each carrying its own state, whatever the calls' sizes; each decision is the mean of window
    # k's probability and window k - 1's
    audio = speech[0][: 300 * WINDOW]
    windows = np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[::256]
    vad, got, i = SileroVAD(256), [], 0
    for n in (1, 2, 3, 7, 1, 40, 5, 2, 100, 1000):
        got.append(vad(np.ascontiguousarray(windows[i : i + n])))
        i += n
    got = np.concatenate(got)
    assert got.size == len(windows) and vad.hop == 256
    raw = np.zeros(len(windows), np.float32)
    raw[0::2] = SileroVAD()(audio.reshape(-1, WINDOW))
    raw[1::2] = SileroVAD()(audio[256 : 256 + 299 * WINDOW].reshape(-1, WINDOW))
    np.testing.assert_allclose(got, (raw + np.concatenate([raw[:1], raw[:-1]])) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="hop"):
        SileroVAD(300)


@pytest.mark.parametrize("hop", [WINDOW, 256])
def test_segmenter_finds_each_sentence(speech, hop):
    audio, script = speech
    segs = push_in_chunks(Segmenter(SegmenterConfig(), SileroVAD(hop)), audio, np.random.default_rng(0))
    assert [s.final for s in segs] == [True] * len(script)
    for s, line in zip(segs, script):
        t0, t1 = s.start / SR, s.end / SR
        assert t0 <= line["t_start"] + 0.3 and t1 >= line["t_end"] - 0.3, (t0, t1, line)
        assert t1 - t0 < line["t_end"] - line["t_start"] + 1.0
        np.testing.assert_array_equal(s.audio, audio[s.start : s.end])


@pytest.mark.parametrize("hop", [WINDOW, 256])
def test_chunking_does_not_change_the_segments(speech, hop):
    audio = speech[0]
    a = push_in_chunks(Segmenter(SegmenterConfig(), SileroVAD(hop)), audio, np.random.default_rng(0))
    seg = Segmenter(SegmenterConfig(), SileroVAD(hop))
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


# --------------------------------------------------------------------------- tentative windows


class ScriptedVad:
    """A VAD stand-in deciding every ``hop`` samples (512: one window after another; 256 as SileroVAD(256)): the listed
    probability for each window."""

    def __init__(self, probs, hop=WINDOW):
        self.hop, self._it = hop, iter(probs)

    def __call__(self, windows):
        return np.array([next(self._it) for _ in range(len(windows))], np.float32)


def push_windows(seg: Segmenter, audio: np.ndarray):
    """Push one VAD window at a time; -> [(position, ready segments, tentative())] after each push."""
    out = []
    for i in range(0, audio.size, WINDOW):
        seg.push(audio[i : i + WINDOW])
        out.append((seg.position, seg.ready(), seg.tentative()))
    return out


def same_segment(a, b) -> bool:
    return ((a.start, a.end, a.final, a.speech_start) == (b.start, b.end, b.final, b.speech_start)
            and np.array_equal(a.audio, b.audio))


@pytest.mark.parametrize(("hop", "max_window_s"), [(WINDOW, 10.0), (256, 10.0), (WINDOW, 1.0), (256, 1.0)])
def test_tentative_window_is_the_window_the_utterance_closes_with(speech, hop, max_window_s):
    # max_window_s 1: sliding windows are cut during the closing silences too (the final window's start moves)
    audio, script = speech
    rng = np.random.default_rng(3)
    seg = Segmenter(SegmenterConfig(max_window_s=max_window_s, hop_s=max_window_s / 2), SileroVAD(hop))
    pad = SegmenterConfig().end_pad_ms * SR // 1000
    finals, tentatives, i = [], [], 0
    last = None
    while i < audio.size:
        n = int(rng.integers(1, 3000))  # shorter than the 300 ms between a tentative window and the close
        seg.push(audio[i : i + n])
        i += n
        finals += [(s, last) for s in seg.ready() if s.final]
        t = seg.tentative()
        if t is not None:
            assert seg.position >= t.end and seg.speaking  # its audio is complete
            if t is not last:
                tentatives.append(t)
        last = t
    assert seg.flush() == [] and len(finals) == len(script)
    if max_window_s < 5:
        assert any(s.start > s.speech_start for s, _ in finals)  # a window that started after its speech
    for s, t in finals:
        assert t is not None and same_segment(s, t), (s.start, s.end, t and (t.start, t.end))
        np.testing.assert_array_equal(t.audio, audio[t.start : t.end])
    assert len(tentatives) >= len(script)
    assert all(t.end - pad > t.speech_start for t in tentatives)


def padded_200(**kw) -> SegmenterConfig:
    """The geometry the tests below were written for: 200 ms (3200 samples) of pad on either side of the speech."""
    return SegmenterConfig(speech_pad_ms=200, end_pad_ms=200, **kw)


def test_tentative_window_is_withdrawn_when_speech_resumes():
    # speech, 320 ms of silence (longer than the 200 ms pad, shorter than the 500 ms that closes), speech, silence
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 10 + [0.9] * 20 + [0.1] * 30
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    steps = push_windows(Segmenter(padded_200(), ScriptedVad(probs)), audio)
    seen = [(pos, t) for pos, _, t in steps if t is not None]
    early = [t for _, t in seen if t.end == 24 * WINDOW + 3200]
    assert early, "a tentative window once the pause was 200 ms long"
    assert all(t is early[0] for t in early)  # the same object while unchanged
    resumed = next(pos for pos, _, t in steps if pos > early[0].end and t is None)
    assert resumed <= 36 * WINDOW  # withdrawn as soon as the VAD hears speech again
    emitted = [s for _, ready, _ in steps for s in ready]
    assert [(s.start, s.end, s.final) for s in emitted] == [(0, 54 * WINDOW + 3200, True)]
    last_tentative = [t for _, t in seen if t.start == 0 and t.end == emitted[0].end]
    assert last_tentative and same_segment(last_tentative[-1], emitted[0])
    assert steps[-1][2] is None  # closed: nothing tentative any more


def test_tentative_window_counts_a_sliding_window_cut_during_the_silence():
    # 1 s windows every 0.5 s: the sliding window due at 32256 falls between the tentative window (n >= 28800)
    # and the close (n = 33792), and moves the final window's start from 16000 to 24000
    cfg = padded_200(max_window_s=1.0, hop_s=0.5)
    probs = [0.1] * 4 + [0.9] * 46 + [0.1] * 20
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    steps = push_windows(Segmenter(cfg, ScriptedVad(probs)), audio)
    first = next((pos, t) for pos, _, t in steps if t is not None)
    assert first[0] < 32256 and (first[1].start, first[1].end) == (24000, 28800)
    emitted = [(pos, s) for pos, ready, _ in steps for s in ready]
    assert [(pos, s.start, s.end, s.final) for pos, s in emitted] == [
        (16384, 0, 16000, False), (24064, 8000, 24000, False), (32256, 16000, 32000, False),
        (33792, 24000, 28800, True)]
    assert same_segment(emitted[-1][1], first[1])


def test_no_tentative_window_for_too_little_speech_or_in_continuous_mode():
    probs = [0.1] * 4 + [0.9] * 5 + [0.1] * 30  # 160 ms of speech: below min_speech_ms, never emitted
    audio = np.zeros(len(probs) * WINDOW, np.float32)
    steps = push_windows(Segmenter(padded_200(), ScriptedVad(probs)), audio)
    assert all(t is None and ready == [] for _, ready, t in steps)
    cont = Segmenter(SegmenterConfig(mode="continuous", max_window_s=1.0, hop_s=0.5))
    cont.push(np.zeros(3 * SR, np.float32))
    assert cont.tentative() is None and len(cont.ready()) == 5


def test_open_window_is_the_utterance_so_far_from_where_its_next_window_starts():
    # as above: 1 s windows every 0.5 s, speech from window 4 to 50, then silence that closes it
    cfg = padded_200(max_window_s=1.0, hop_s=0.5)
    probs = [0.1] * 4 + [0.9] * 46 + [0.1] * 20
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    seg = Segmenter(cfg, ScriptedVad(probs))
    n_cut = 0
    for i in range(len(probs)):
        seg.push(audio[i * WINDOW : (i + 1) * WINDOW])
        n_cut += sum(not s.final for s in seg.ready())
        w, pos = seg.open_window(), seg.position
        assert seg.in_speech == (4 <= i < 50)
        if not seg.speaking:
            assert w is None and seg.speech_start is None
            continue
        assert seg.speech_start == 4 * WINDOW and w.speech_start == 4 * WINDOW and not w.final
        assert (w.start, w.end) == (max(n_cut * SR // 2, pos - SR), pos)  # the next window's start, 1 s at most
        np.testing.assert_array_equal(w.audio, audio[w.start : w.end])
    assert n_cut == 3 and not seg.speaking
    assert Segmenter(SegmenterConfig(mode="continuous")).open_window() is None


def test_an_allowed_early_close_ends_the_utterance_after_the_short_silence_with_the_tentative_window():
    # speech for 20 windows, then silence: the long wait closes after 500 ms, the early close after 300 ms
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 40
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    silence_at = 24 * WINDOW
    long_wait = [(pos, s) for pos, ready, _ in push_windows(Segmenter(padded_200(), ScriptedVad(probs)), audio)
                 for s in ready]
    seg = Segmenter(padded_200(early_close_ms=300), ScriptedVad(probs))
    closed, allowed = [], None
    for i in range(0, audio.size, WINDOW):
        seg.push(audio[i : i + WINDOW])
        closed += [(seg.position, s) for s in seg.ready()]
        t = seg.tentative()
        if t is not None and allowed is None:
            assert seg.allow_early_close(t)  # what the pipeline does when its transcript ends a sentence
            allowed = t
            closed += [(seg.position, s) for s in seg.ready()]
    (pos, final), = closed
    assert same_segment(final, allowed) and same_segment(final, long_wait[0][1])  # the very same window
    assert pos - silence_at == 10 * WINDOW >= 300 * SR // 1000 > pos - silence_at - WINDOW  # 300 ms, not 500
    assert long_wait[0][0] - silence_at >= 500 * SR // 1000 and seg.n_early == 1


@pytest.mark.parametrize("early_close_ms", [300, 0])
def test_sixteen_ms_decisions_count_a_silence_in_16_ms_steps(early_close_ms):
    # windows every 256 samples: speech in windows 20-59, then silence from window 60 (sample 15360); the early close
    # comes with the first window ending 300 ms or more after the silence's start (304 ms), the long wait with the
    # first ending 500 ms or more after it (512 ms), both with the same window, which the tentative one announced
    hop, silence_at = 256, 60 * 256
    probs = [0.1] * 20 + [0.9] * 40 + [0.1] * 60
    audio = np.arange((len(probs) - 1) * hop + WINDOW, dtype=np.float32)
    seg = Segmenter(padded_200(early_close_ms=early_close_ms), ScriptedVad(probs, hop))
    closed, allowed = [], None
    for i in range(0, audio.size, 100):  # pushes that do not line up with the windows
        seg.push(audio[i : i + 100])
        closed += [(seg.position, s) for s in seg.ready()]
        t = seg.tentative()
        if t is not None and allowed is None:
            allowed = t
            assert seg.allow_early_close(t) == bool(early_close_ms)
    (pos, final), = closed
    assert same_segment(final, allowed) and (final.start, final.end) == (20 * hop - 3200, silence_at + 3200)
    ms = SR // 1000
    close = (early_close_ms or 500) * ms
    window_end = silence_at + WINDOW + -(-(close - WINDOW) // hop) * hop  # the first window ending that late
    assert window_end - silence_at == (304 if early_close_ms else 512) * ms
    assert window_end <= pos < window_end + 100  # seen with the push that carried that window's last sample


@pytest.mark.parametrize("hop", [WINDOW, 256])
def test_the_tentative_window_foresees_sliding_windows_cut_in_the_closing_silence(hop):
    # runs of speech and silence at random, 1 s windows every 0.5 s, several closing silences: wherever a sliding
    # window falls in the silence, the utterance closes with exactly the window tentative() announced
    rng = np.random.default_rng(7)
    checked = 0
    for min_silence_ms in (300, 400, 450, 500, 520):
        probs: list[float] = [0.1] * 5
        per_32ms = WINDOW // hop
        while len(probs) < 3000 * per_32ms:  # about 96 s
            probs += [0.9] * int(rng.integers(10, 120) * per_32ms) + [0.1] * int(rng.integers(3 * per_32ms, 50 * per_32ms))
        audio = np.arange((len(probs) - 1) * hop + WINDOW, dtype=np.float32)
        cfg = padded_200(max_window_s=1.0, hop_s=0.5, min_silence_ms=min_silence_ms, early_close_ms=0,
                         phrase_close_ms=0)
        seg, last, i = Segmenter(cfg, ScriptedVad(probs, hop)), None, 0
        while i < audio.size:
            n = int(rng.integers(1, 700))
            seg.push(audio[i : i + n])
            i += n
            for s in seg.ready():
                if s.final:
                    assert last is not None and same_segment(s, last), (min_silence_ms, s.start, s.end, last)
                    checked += 1
            last = seg.tentative()
    assert checked > 100


def test_an_early_close_may_ask_for_its_own_silence():
    # phrase_close_ms: the permission carries its silence (400 ms here), at least end_pad_ms; the long wait or more
    # is refused (nothing to shorten)
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 40
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    silence_at = 24 * WINDOW
    closes = {}
    for silence_ms in (400, 100, 500):
        seg = Segmenter(padded_200(early_close_ms=300), ScriptedVad(probs))
        taken = None
        for i in range(0, audio.size, WINDOW):
            seg.push(audio[i : i + WINDOW])
            if seg.ready():
                closes[silence_ms] = seg.position - silence_at
            t = seg.tentative()
            if t is not None and taken is None:
                taken = seg.allow_early_close(t, silence_ms)
                if seg.ready():
                    closes[silence_ms] = seg.position - silence_at
        assert taken == (silence_ms < 500)
    ms = SR // 1000
    assert closes[400] == 13 * WINDOW and 400 * ms <= closes[400] < 400 * ms + WINDOW
    assert closes[100] < 300 * ms  # the window's audio (end_pad_ms 200) was complete: it closed at once
    assert closes[500] >= 500 * ms  # the long wait


def test_an_early_close_needs_the_same_silence_and_never_cuts_mid_sentence_by_itself():
    # a 320 ms pause inside speech: the permission for it lapses when speech resumes; without one, no early close
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 10 + [0.9] * 20 + [0.1] * 30
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    seg = Segmenter(padded_200(early_close_ms=400), ScriptedVad(probs))
    first = None
    finals = []
    for i in range(0, audio.size, WINDOW):
        seg.push(audio[i : i + WINDOW])
        finals += seg.ready()
        t = seg.tentative()
        if t is not None and first is None:
            first = t
            assert seg.allow_early_close(t)  # taken, but the pause ends before 400 ms of silence
    assert [(s.start, s.end) for s in finals] == [(0, 54 * WINDOW + 3200)] and seg.n_early == 0
    assert not seg.allow_early_close(first)  # a stale window: refused
    plain = Segmenter(padded_200(early_close_ms=300), ScriptedVad(probs))
    assert [(s.start, s.end) for _, r, _ in push_windows(plain, audio) for s in r] == [(0, 54 * WINDOW + 3200)]


# --------------------------------------------------------------------------- what Whisper hears


def test_what_whisper_hears_is_known_before_the_tentative_window_and_is_the_final_windows_asr_audio(speech):
    audio, script = speech
    rng = np.random.default_rng(5)
    cfg = padded_200()
    seg = Segmenter(cfg, SileroVAD())
    pad, asr_pad = cfg.end_pad_ms * SR // 1000, cfg.asr_pad_ms * SR // 1000
    finals, i, last = [], 0, None
    ahead = []  # samples between heard() and tentative() appearing, per closing silence
    while i < audio.size:
        n = int(rng.integers(1, 1500))
        seg.push(audio[i : i + n])
        i += n
        finals += [(s, last) for s in seg.ready() if s.final]
        h, t = seg.heard(), seg.tentative()
        if h is not None:
            assert seg.speaking and seg.position >= h.end == h.asr_end and h.final
            if h is not last:
                ahead.append(seg.position)
            if t is not None:  # the same window, of which Whisper hears the first part
                assert (t.start, t.asr_end, t.speech_start) == (h.start, h.end, h.speech_start)
                np.testing.assert_array_equal(t.asr_audio, h.audio)
                if ahead and ahead[-1] > 0:
                    ahead[-1] = t.end - ahead[-1]
        last = h
    assert seg.flush() == [] and len(finals) == len(script)
    for s, h in finals:
        assert h is not None and (h.start, h.asr_end, h.speech_start) == (s.start, s.asr_end, s.speech_start)
        np.testing.assert_array_equal(s.asr_audio, h.audio)
        np.testing.assert_array_equal(s.asr_audio, audio[s.start : s.asr_end])
        assert s.end - s.asr_end == pad - asr_pad
    # known about pad - asr_pad (136 ms) sooner than the window itself (chunks of up to 94 ms blur it)
    assert np.median(ahead) >= (pad - asr_pad) - 1500


def test_heard_follows_the_silence_and_an_early_close_allowed_on_it_closes_with_the_tentative_window():
    # speech, a 320 ms pause, speech, then silence: 64 ms into each silence heard() appears, the pause's is withdrawn
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 10 + [0.9] * 20 + [0.1] * 30
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    cfg = padded_200(early_close_ms=300)
    seg = Segmenter(cfg, ScriptedVad(probs))
    heard, closed, asr_pad = [], [], cfg.asr_pad_ms * SR // 1000
    for i in range(0, audio.size, WINDOW):
        seg.push(audio[i : i + WINDOW])
        closed += [(seg.position, s) for s in seg.ready()]
        h = seg.heard()
        if h is not None and (not heard or h is not heard[-1][1]):
            heard.append((seg.position, h))
            assert seg.tentative() is None  # before the window's audio is complete
            if len(heard) == 2:
                assert seg.allow_early_close(h)  # the transcript of the second silence ends a sentence
    pause_at, silence_at = 24 * WINDOW, 54 * WINDOW
    assert [(pos, h.start, h.end) for pos, h in heard] == [
        (pause_at + asr_pad, 0, pause_at + asr_pad), (silence_at + asr_pad, 0, silence_at + asr_pad)]
    (pos, final), = closed
    assert pos - silence_at == 10 * WINDOW  # closed early: 300 ms of silence (rounded up to VAD windows)
    assert (final.start, final.end, final.asr_end) == (0, silence_at + 3200, silence_at + asr_pad)
    assert seg.n_early == 1 and seg.heard() is None and seg.tentative() is None
    assert not seg.allow_early_close(heard[0][1])  # a withdrawn silence: refused


def test_only_the_closing_windows_of_utterances_hear_less_than_their_audio():
    cfg = padded_200(max_window_s=1.0, hop_s=0.5)
    probs = [0.1] * 4 + [0.9] * 46 + [0.1] * 3  # the stream ends 96 ms into the silence
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    seg = Segmenter(cfg, ScriptedVad(probs))
    seg.push(audio)
    out = seg.ready() + seg.flush()
    assert [s.asr_end for s in out if not s.final] == [None, None]  # sliding windows of the speech
    last = out[-1]
    assert last.final and (last.end, last.asr_end) == (audio.size, 50 * WINDOW + cfg.asr_pad_ms * SR // 1000)
    in_speech = Segmenter(cfg, ScriptedVad([0.1] * 4 + [0.9] * 30))
    in_speech.push(np.zeros(34 * WINDOW, np.float32))
    assert [(s.end, s.asr_end) for s in in_speech.flush() if s.final] == [(34 * WINDOW, None)]
    with pytest.raises(ValueError, match="asr_pad_ms"):
        SegmenterConfig(asr_pad_ms=300)


def test_the_window_keeps_speech_pad_before_its_speech_and_end_pad_after_it():
    cfg = SegmenterConfig()  # the default: 200 ms before (Whisper's first words), 100 ms after (known sooner)
    assert (cfg.speech_pad_ms, cfg.end_pad_ms) == (200, 100)
    probs = [0.1] * 10 + [0.9] * 20 + [0.1] * 30
    audio = np.arange(len(probs) * WINDOW, dtype=np.float32)
    steps = push_windows(Segmenter(cfg, ScriptedVad(probs)), audio)
    speech_start, silence_at = 10 * WINDOW, 30 * WINDOW
    emitted = [s for _, ready, _ in steps for s in ready]
    assert [(s.start, s.end, s.final) for s in emitted] == [(speech_start - 3200, silence_at + 1600, True)]
    # the tentative window, the same cut, is offered once 100 ms of the silence are in, not 200
    first = next(pos for pos, _, t in steps if t is not None)
    assert silence_at + 1600 <= first < silence_at + 1600 + WINDOW
    for bad, what in (({"end_pad_ms": 500}, "end_pad_ms"), ({"end_pad_ms": 50}, "asr_pad_ms"),
                      ({"early_close_ms": 150, "end_pad_ms": 200}, "early_close_ms"), ({"speech_pad_ms": -1}, "speech_pad_ms")):
        with pytest.raises(ValueError, match=what):
            SegmenterConfig(**bad)


def test_the_pauses_whisper_may_cut_at_are_where_heard_ended_in_each_pause():
    # speech, a 320 ms pause, speech, a 64 ms pause (shorter than asr_pad_ms 96: not one), speech, the closing silence
    probs = [0.1] * 4 + [0.9] * 20 + [0.1] * 10 + [0.9] * 20 + [0.1] * 2 + [0.9] * 10 + [0.1] * 30
    cfg = padded_200(asr_pad_ms=96)
    pad = cfg.asr_pad_ms * SR // 1000
    seg = Segmenter(cfg, ScriptedVad(probs))
    heard_ends = []
    for _ in probs:
        seg.push(np.zeros(WINDOW, np.float32))
        h = seg.heard()
        if h is not None and h.asr_end not in heard_ends:
            heard_ends.append(h.asr_end)
            assert h.asr_pauses == tuple(p - h.start for p in heard_ends[:-1])  # the earlier pauses only
    (final,) = [s for s in seg.ready() + seg.flush() if s.final]
    assert heard_ends == [24 * WINDOW + pad, 66 * WINDOW + pad]
    assert final.pauses == (24 * WINDOW + pad,) and final.asr_pauses == (24 * WINDOW + pad - final.start,)

import dataclasses

import numpy as np
import pytest

from mmsa.media import load_audio
from mmsa.monitor.asr import collapse_repeats, ends_phrase, ends_sentence, piece_cuts, trim_padding
from tests.monitor.helpers import word_recall

SR = 16_000


def test_trim_padding_keeps_content_plus_margin_even():
    feats = np.zeros((80, 3000), np.float32)
    feats[:, :451] = -0.5
    out = trim_padding(feats, 100)
    assert out.shape == (80, 552) and np.all(out[:, :451] == -0.5) and np.all(out[:, 451:] == 0)
    assert trim_padding(feats[None], 5000).shape == (1, 80, 3000)


@pytest.mark.parametrize("text, kept", [
    # Whisper looping on a short RAVDESS clip (bench/asr_trim.py with a 1-2 s margin), cut off by max_new_tokens
    ("Dogs are sitting by the door. Dogs are sitting by the door. Dogs are sitting by the door. Dogs",
     "Dogs are sitting by the door."),
    ("kids are talking by the door! kids are talking by the door! kids are talking by",
     "kids are talking by the door!"),
    ("Hello there. Dogs are sitting by the door. Dogs are sitting by", "Hello there. Dogs are sitting by the door."),
    ("I don't know. I DON'T KNOW. It was fine.", "I don't know. It was fine."),
    # what people say: short repeats and a phrase said again mid-sentence stay
    ("Kids, kids, kids are talking by the door!", "Kids, kids, kids are talking by the door!"),
    ("no no no no", "no no no no"),
    ("The movie was good and the movie was good", "The movie was good and the movie was good"),
    ("It was bad. It was", "It was bad. It was"),
    ("", ""),
])
def test_collapse_repeats_keeps_one_copy_of_a_looped_phrase(text, kept):
    assert collapse_repeats(text) == kept


@pytest.fixture(scope="module")
def sentences(clip_dir):
    folder, script = clip_dir
    audio = load_audio(folder / "speech.wav")
    return [(line["text"], audio[int((line["t_start"] - 0.2) * SR) : int((line["t_end"] + 0.2) * SR)])
            for line in script]


def test_trimmed_encoder_transcribes_like_the_padded_one(transcriber, sentences):
    try:
        for text, audio in sentences:
            transcriber.set_trim(True)
            trimmed = transcriber.transcribe(audio)
            transcriber.set_trim(False)
            padded = transcriber.transcribe(audio)
            assert word_recall(text, trimmed.text) >= 0.6, (text, trimmed.text)
            assert word_recall(padded.text, trimmed.text) >= 0.8, (padded.text, trimmed.text)
    finally:
        transcriber.set_trim(True)


def test_words_carry_timestamps_inside_the_audio_when_asked(transcriber, sentences):
    assert not transcriber.word_timestamps  # the monitor's default: [asr] word_timestamps = false
    try:
        for _, audio in sentences:
            transcriber.word_timestamps = True
            t = transcriber.transcribe(audio)
            assert t.words and all(0 <= w.start_s <= w.end_s <= audio.size / SR for w in t.words)
            assert [w.start_s for w in t.words] == sorted(w.start_s for w in t.words)
            transcriber.word_timestamps = False
            untimed = transcriber.transcribe(audio)
            assert untimed.words == ()
            assert untimed.text.split() == t.text.split()  # the same words either way
    finally:
        transcriber.word_timestamps = False


def test_same_audio_same_words(transcriber, sentences):
    _, audio = sentences[1]
    assert transcriber.transcribe(audio) == transcriber.transcribe(audio.copy())


def test_too_short_audio_is_no_speech(transcriber):
    assert transcriber.transcribe(np.zeros(800, np.float32)).text == ""


def test_without_segment_timestamps_each_utterance_is_encoded_once(transcriber, sentences):
    """[asr] timestamps = false (the default): no second encoder pass after a segment that ends early."""
    assert not transcriber.timestamps
    model = transcriber.model
    shapes: list[tuple[int, ...]] = []
    encode = model.encode

    def counting(features):
        shapes.append(features.shape)
        return encode(features)

    model.encode = counting
    try:
        for text, audio in sentences:
            shapes.clear()
            untimed = transcriber.transcribe(audio)
            assert len(shapes) == 1, (text, shapes)
            transcriber.timestamps = True
            stamped = transcriber.transcribe(audio)
            transcriber.timestamps = False
            assert word_recall(text, untimed.text) >= 0.6, (text, untimed.text)
            assert word_recall(stamped.text, untimed.text) >= 0.8, (stamped.text, untimed.text)
    finally:
        del model.encode
        transcriber.timestamps = False


def test_piece_cuts_leave_long_enough_pieces_and_no_scrap_at_the_end():
    assert piece_cuts(100, [], 10, 5) == []
    assert piece_cuts(100, [30, 5, 60, 38, 97], 20, 5) == [30, 60]  # 5: too soon; 38: 8 after 30; 97: 3 before the end
    assert piece_cuts(100, [96], 20, 5) == []


def test_pieces_reuse_what_was_transcribed_of_the_same_utterance_before(transcriber, sentences):
    """[asr] piece_min_s: the utterance heard at its first pause, then whole. The second transcription encodes
    only the new piece, and gives the words a transcription of the whole from scratch gives."""
    (_, first), (_, second) = sentences[0], sentences[1]
    gap = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([first, gap, second])
    pause = first.size + SR // 10  # where heard() ended in the pause: 100 ms into it
    model, cfg = transcriber.model, transcriber.cfg
    shapes: list[int] = []  # the frames of audio each encoder call hears
    encode = model.encode

    def counting(features):
        shapes.append(trim_padding(features, 0).shape[-1])
        return encode(features)

    model.encode = counting
    transcriber.cfg = dataclasses.replace(cfg, piece_min_s=1.0)
    try:
        heard = transcriber.transcribe(audio[:pause], ())
        assert len(shapes) == 1
        whole = transcriber.transcribe(audio, (pause,))
        assert len(shapes) == 2 and abs(shapes[1] - 100 * (audio.size - pause) / SR) <= 2  # the new piece alone
        assert whole.text.startswith(heard.text)
        assert word_recall(sentences[0][0] + " " + sentences[1][0], whole.text) >= 0.6, whole.text
        transcriber._pieces.clear()  # noqa: SLF001 - nothing remembered: the same words from scratch
        assert transcriber.transcribe(audio, (pause,)) == whole and len(shapes) == 4
        assert transcriber.transcribe(audio, ()) == transcriber.transcribe(audio)  # no pause: one pass, as before
        transcriber.cfg = cfg  # piece_min_s = 0 (the default): whole, whatever the pauses
        assert transcriber.transcribe(audio, (pause,)) == transcriber.transcribe(audio)
    finally:
        del model.encode
        transcriber.cfg = cfg
        transcriber._pieces.clear()  # noqa: SLF001


@pytest.mark.parametrize("text, sentence, phrase", [
    ("I love it.", True, False),
    ("Is it?", True, False),
    ('He said "stop!"', True, False),
    ("Well...", False, False),
    ("I love it", False, True),
    ("Terrible service", False, True),
    (" Kids are talking by the door ", False, True),
    ("I went to the", False, False),
    ("and then,", False, False),
    ("I think it's", False, False),
    ("So um", False, False),
    ("it was really", False, False),
    ("", False, False),
])
def test_end_of_sentence_and_end_of_phrase(text, sentence, phrase):
    """The adaptive close's rules (segmenter.early_close_ms, phrase_close_ms)."""
    assert ends_sentence(text) is sentence and ends_phrase(text) is phrase

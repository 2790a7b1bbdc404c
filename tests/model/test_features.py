import numpy as np
import pytest
import torch

from mmsa.model.features import (
    DEFAULT_FEATURES,
    FeatureConfig,
    audio_features,
    collate,
    face_crop,
    face_window,
    log_stft,
    n_stft_frames,
    normalize_text,
    spread_indices,
    tokenize,
)


def test_stft_frames_follow_the_constants():
    cfg = DEFAULT_FEATURES
    wave = torch.randn(2, 16000)
    spec = log_stft(wave)
    assert spec.shape == (2, cfg.n_freq, n_stft_frames(16000)) == (2, 201, 98)


def test_stft_in_chunks_equals_one_shot():
    """center=False framing: frames of a stream cut at hop boundaries are the frames of the whole."""
    rng = np.random.default_rng(1)
    wave = torch.from_numpy(rng.standard_normal(16000 * 2).astype(np.float32))
    whole = log_stft(wave[None])[0]
    hop, n_fft = DEFAULT_FEATURES.hop_length, DEFAULT_FEATURES.n_fft
    parts, start = [], 0
    while start + n_fft <= wave.numel():
        chunk_frames = min(37, n_stft_frames(wave.numel() - start))
        seg = wave[start : start + (chunk_frames - 1) * hop + n_fft]
        parts.append(log_stft(seg[None])[0])
        start += chunk_frames * hop
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-5)


def test_audio_features_normalised_and_gain_invariant():
    rng = np.random.default_rng(2)
    wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    a = audio_features(wave)
    b = audio_features(wave * 4.0)
    assert a.shape == (201, 98)
    assert abs(float(a.mean())) < 1e-4 and abs(float(a.std()) - 1) < 1e-3
    assert (a - b).abs().max() < 0.01  # the log floor only matters for near-silent bins


def test_audio_too_short_or_empty_is_absent_and_long_is_cropped():
    assert audio_features(np.zeros(0, dtype=np.float32)) is None
    assert audio_features(np.zeros(1000, dtype=np.float32)) is None
    long = audio_features(np.random.default_rng(0).standard_normal(16000 * 15).astype(np.float32))
    assert long.shape[1] == n_stft_frames(DEFAULT_FEATURES.max_audio_samples)


def test_face_crop_shapes_and_range():
    frame = np.full((360, 480, 3), 200, dtype=np.uint8)
    crop = face_crop(frame, (100, 50, 80, 90))
    assert crop.shape == (1, 48, 48)
    assert torch.allclose(crop, torch.full_like(crop, 200 / 255), atol=1e-3)
    gray = np.zeros((48, 48), dtype=np.uint8)
    assert face_crop(gray).shape == (1, 48, 48)


def test_face_window_spreads_frames():
    assert spread_indices(3, 8) == [0, 1, 2]
    assert spread_indices(16, 4) == [2, 6, 10, 14]
    crops = [torch.full((1, 48, 48), float(i)) for i in range(20)]
    win = face_window(crops)
    assert win.shape == (8, 1, 48, 48)
    assert face_window([]) is None


def test_text_normalisation_matches_mosi_style():
    assert normalize_text("It's REALLY   good, isn't it?") == "its really good isnt it"
    assert normalize_text("Hi!", FeatureConfig(text_style="raw")) == "Hi!"


def test_tokenize_with_aspect_gives_eq_2_to_4_spans(tokenizer):
    t = tokenize(["the pizza was great", "nothing here"], tokenizer, aspects=["pizza", "pizza"])
    ids = t.input_ids[0].tolist()
    s1, s2 = t.seg1[0].tolist(), t.seg2[0].tolist()
    assert ids[0] == tokenizer.cls_token_id
    assert ids[s1[0] : s1[1]] == ids[s2[0] : s2[1]] == tokenizer("pizza", add_special_tokens=False)["input_ids"]
    assert ids[s2[1]] == tokenizer.sep_token_id and t.token_type_ids[0, s2[0]] == 1
    # aspect absent from the text: segment 1 falls back to the whole text
    n_text = len(tokenizer("nothing here", add_special_tokens=False)["input_ids"])
    assert t.seg1[1].tolist() == [1, 1 + n_text]


def test_tokenize_truncates_to_max_tokens(tokenizer):
    t = tokenize(["word " * 500], tokenizer)
    assert t.input_ids.shape[1] == DEFAULT_FEATURES.max_tokens


def test_collate_masks_missing_modalities(tokenizer):
    from tests.model.helpers import random_sample, seeded

    rng = seeded()
    b = collate([random_sample(rng), random_sample(rng, text=None, seconds=0, n_faces=0),
                 random_sample(rng, text="   ", seconds=2.0, n_faces=3)], tokenizer)
    assert b.presence().tolist() == [[True, True, True], [False, False, False], [False, True, True]]
    assert b.audio.shape[0] == 3 and b.audio_mask.sum(1).tolist()[1] == 0
    assert b.face_mask.sum(1).tolist() == [5, 0, 3]


def test_fingerprint_changes_with_any_setting():
    assert FeatureConfig().fingerprint() == DEFAULT_FEATURES.fingerprint()
    other = FeatureConfig(max_audio_s=8.0)
    assert other.fingerprint() != DEFAULT_FEATURES.fingerprint()
    assert DEFAULT_FEATURES.differences(other) == ["max_audio_s (checkpoint 8.0, code 10.0)"]


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), dtype=np.uint8)])
def test_face_crop_rejects_bad_frames(bad):
    with pytest.raises(ValueError):
        face_crop(bad)

"""Whisper's encoder statistics as the audio input (``[model] audio_input = "whisper"``, mmsa.model.speech):
the features, a model that reads them in training and evaluation, and checkpoints that carry the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmsa.model import DEFAULT_FEATURES, CheckpointError, MMSAModel, ModelConfig, load_checkpoint, save_checkpoint
from mmsa.model.features import audio_features
from mmsa.model.speech import STATS_DIM, SpeechEncoder, speech_encoder
from tests.model.helpers import batch, random_sample, seeded, tiny_config

WHISPER = ModelConfig(audio_input="whisper").features()


def test_stft_models_keep_the_fingerprint_of_every_earlier_checkpoint():
    assert "audio_input" not in json.loads(DEFAULT_FEATURES.to_json())
    assert ModelConfig().features() == DEFAULT_FEATURES
    assert WHISPER.fingerprint() != DEFAULT_FEATURES.fingerprint()
    assert DEFAULT_FEATURES.differences(WHISPER) == ["audio_input (checkpoint 'whisper', code 'stft')"]
    assert WHISPER.audio_dim == STATS_DIM == 768 and DEFAULT_FEATURES.audio_dim == DEFAULT_FEATURES.n_freq


def test_statistics_of_real_speech(data_dir):
    from mmsa.media import load_audio

    wave = load_audio(data_dir / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.flac")  # angry
    x = audio_features(wave, WHISPER)
    assert x.shape == (STATS_DIM, 1) and torch.isfinite(x).all() and (x[STATS_DIM // 2 :] > 0).all()
    assert torch.equal(x[:, 0], torch.from_numpy(speech_encoder()(wave)))  # one encoder, no state between calls
    assert torch.equal(x, audio_features(wave, WHISPER))
    calm = audio_features(load_audio(data_dir / "ravdess" / "Actor_01" / "03-01-02-01-01-01-01.flac"), WHISPER)
    assert (x - calm).abs().max() > 0.1
    # too short to use: absent, as with the STFT map
    assert audio_features(wave[:1000], WHISPER) is None
    # the zero frames the monitor's ASR adds after an utterance change the states, not their number
    padded = SpeechEncoder(margin_s=5.0)(wave)
    assert padded.shape == (STATS_DIM,) and not np.array_equal(padded, x[:, 0].numpy())
    # one thread (beside the monitor's transcription) or CTranslate2's default: the same states
    assert speech_encoder().threads == 1
    assert np.array_equal(SpeechEncoder(threads=0)(wave), x[:, 0].numpy())


def test_a_whisper_model_trains_on_batches_of_any_size_and_scores_in_eval(tiny_bert, tokenizer):
    rng = seeded(0)
    model = MMSAModel.build(tiny_config(tiny_bert, audio_input="whisper", audio_head="valence3"), tiny_bert)
    samples = [random_sample(rng, seconds=s, features=WHISPER) for s in (1.0, 1.7, 2.4)]
    x = batch(tokenizer, samples, WHISPER)
    assert x.audio.shape == (3, STATS_DIM, 1)
    model.train()
    before = model.audio.norm.running_mean.clone()
    out = model(x, views=("audio",))
    assert torch.isfinite(out.unimodal["audio"]).all() and "audio" in out.views  # two dropout passes
    assert not torch.equal(before, model.audio.norm.running_mean)  # the statistics learn the inputs' scale
    one = model(batch(tokenizer, samples[:1], WHISPER))  # one utterance: the running statistics, no error
    assert torch.isfinite(one.unimodal["audio"]).all()
    model.eval()
    with torch.inference_mode():
        a, b = model(x).unimodal["audio"], model(x).unimodal["audio"]
    assert torch.equal(a, b)


def test_checkpoints_carry_the_audio_input(tmp_path, tiny_bert, tokenizer):
    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(tiny_bert, audio_input="whisper"), tiny_bert).eval()
    path = save_checkpoint(tmp_path / "w.safetensors", model, name="tiny-whisper")  # features follow the model
    loaded = load_checkpoint(path)
    assert loaded.features == WHISPER and loaded.info.feature_fingerprint == WHISPER.fingerprint()
    x = batch(tokenizer, [random_sample(seeded(1), features=WHISPER)], WHISPER)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x).score, model(x).score)
    assert loaded.info.feature_config["audio_input"] == "whisper"
    # a checkpoint whose other feature settings differ is still refused, in one line
    with pytest.raises(CheckpointError, match="frames_per_window"):
        load_checkpoint(path, features=DEFAULT_FEATURES.__class__(frames_per_window=4))


def test_audio_features_of_noise_are_deterministic():
    wave = (np.random.default_rng(3).standard_normal(16000 * 2) * 0.05).astype(np.float32)
    assert torch.equal(audio_features(wave, WHISPER), audio_features(wave, WHISPER))

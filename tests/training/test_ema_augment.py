"""train.ema (averaged weights validated and saved) and the [augment] table of the training config."""

import json

import pytest
import torch

from mmsa.model import ConfigError, MMSAModel, load_checkpoint
from mmsa.model.augment import AugmentConfig
from mmsa.training.cli import train_main
from mmsa.training.config import TrainConfig, TrainOptions, load_config
from mmsa.training.optim import WeightAverage, freeze
from tests.model.helpers import tiny_config
from tests.training.conftest import write_config


def test_weight_average_tracks_only_the_trained_parts(tiny_bert):
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late"), tiny_bert, pretrained_bert=False)
    freeze(model, TrainOptions(trainable=("audio",), bert_lr=0.0))
    avg = WeightAverage(model, 0.5)
    assert avg.avg and all(k.startswith(("audio.", "heads.audio.")) for k in avg.avg)
    w = model.heads["audio"][0].weight
    start = w.detach().clone()
    with torch.no_grad():
        w.add_(2.0)
    avg.update(model)
    assert torch.allclose(avg.avg["heads.audio.0.weight"], start + 1.0)
    raw = avg.swap_in(model)
    assert torch.allclose(model.heads["audio"][0].weight, start + 1.0)
    model.load_state_dict(raw, strict=False)
    assert torch.allclose(model.heads["audio"][0].weight, start + 2.0)


def test_config_reads_augment_and_ema(tmp_path, tiny_bert):
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"reader": "ravdess", "labels": "x.csv", "split": "train"}],
        valid=[{"reader": "ravdess", "labels": "x.csv", "split": "valid"}],
        train={"ema": 0.99}, augment={"freq_masks": 2, "image_flip": 0.5},
    )
    loaded = load_config(cfg)[0]
    assert loaded.train.ema == 0.99
    assert loaded.augment == AugmentConfig(freq_masks=2, image_flip=0.5)
    assert TrainConfig().augment == AugmentConfig() and TrainOptions().ema == 0.0  # defaults: as before
    with pytest.raises(ConfigError, match="ema"):
        load_config(cfg, ["train.ema=1.0"])
    with pytest.raises(ConfigError, match="augment.nope"):
        load_config(cfg, ["augment.nope=1"])


def test_training_with_ema_saves_the_averaged_weights(ravdess_like, tiny_bert, tmp_path):
    cfg = write_config(
        tmp_path / "ema.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "speech", "reader": "ravdess", "labels": str(ravdess_like), "split": "train", "balance": True}],
        valid=[{"name": "speech_valid", "reader": "ravdess", "labels": str(ravdess_like), "split": "valid"}],
        train={"epochs": 2, "batch_size": 2, "trainable": ["audio"], "ema": 0.5},
        augment={"freq_masks": 2, "time_masks": 2},
    )
    run, plain = tmp_path / "run", tmp_path / "plain"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    assert train_main([str(cfg), "--out", str(plain), "--set", "train.ema=0.0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    averaged = load_checkpoint(run / "model.safetensors").model.state_dict()
    raw = load_checkpoint(plain / "model.safetensors").model.state_dict()
    # same seed and data: the frozen parts are equal, the trained audio branch is the average
    assert torch.equal(averaged["heads.text.0.weight"], raw["heads.text.0.weight"])
    assert not torch.equal(averaged["heads.audio.0.weight"], raw["heads.audio.0.weight"])


def test_select_last_keeps_the_last_epoch(ravdess_like, tiny_bert, tmp_path):
    cfg = write_config(
        tmp_path / "last.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "speech", "reader": "ravdess", "labels": str(ravdess_like), "split": "train"}],
        # a test split may be reported when nothing is selected on it
        valid=[{"name": "speech_valid", "reader": "ravdess", "labels": str(ravdess_like), "split": "test", "actors": [13]}],
        train={"epochs": 3, "batch_size": 2, "trainable": ["audio"], "select": "last"},
        model={"audio_bands": 16},
    )
    assert load_config(cfg)[0].select == "last"
    with pytest.raises(ConfigError, match=r"split 'test' cannot be used to select a model.*select = \"last\""):
        load_config(cfg, ["train.select=speech_valid.valence_uar3"])
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["select"] == "last" and metrics["best_epoch"] == 3 == metrics["epochs_run"]
    saved = load_checkpoint(run / "model.safetensors")
    assert saved.model.audio.bands is not None and saved.model.audio.layers[0][0].in_channels == 16
    stage = saved.info.training["stages"][-1]
    assert stage["select"] == "last" and stage["valid"] == ["speech_valid"]
    assert set(metrics["valid"]) == {"speech_valid"}  # still scored and reported

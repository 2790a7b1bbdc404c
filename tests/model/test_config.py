import pytest

from mmsa.common.settings import apply_overrides, from_dict, read_toml
from mmsa.model import ConfigError, ModelConfig


def test_from_dict_converts_lists_and_checks_types():
    cfg = from_dict(ModelConfig, {"hidden_dim": 64, "audio_channels": [8, 16], "fusion": "attention"}, "model")
    assert cfg.hidden_dim == 64 and cfg.audio_channels == (8, 16) and cfg.fusion == "attention"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"hiden_dim": 3}, r"model\.hiden_dim: unknown key"),
        ({"hidden_dim": "big"}, r"model\.hidden_dim: expected an integer, got 'big'"),
        ({"fusion": "sum"}, r"model\.fusion: expected one of 'concat', 'attention', 'late'"),
        ({"inception_channels": [1, 2, 3]}, r"model\.inception_channels: expected a list of 2 values"),
        ({"dropout": True}, r"model\.dropout: expected a number"),
        ({"audio_bands": 500}, r"model: audio_bands: 0 \(every STFT bin\) or 1 to 201 bands, got 500"),
        ({"audio_bands": -1}, r"model: audio_bands: .* got -1"),
        ({"audio_channels": [8, 8, 8, 8, 8]}, r"model: audio_channels: 1 to 4 layers, got 5"),
        ({"audio_channels": []}, r"model: audio_channels: 1 to 4 layers, got 0"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data, "model")


def test_read_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nhidden_dim = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "none.toml")


def test_overrides():
    data = apply_overrides({"train": {"epochs": 1}}, ["train.epochs=3", "train.name=abc", "model.fusion=\"late\""])
    assert data == {"train": {"epochs": 3, "name": "abc"}, "model": {"fusion": "late"}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["nonsense"])


def test_face_options_are_checked():
    from mmsa.common.settings import from_dict
    from mmsa.model import ConfigError

    cfg = from_dict(ModelConfig, {"face_mesh": "packaged", "vision_head": "valence3"}, "model")
    assert cfg.face_mesh == "packaged" and cfg.vision_head == "valence3"
    for key, value in (("face_mesh", "mediapipe"), ("vision_head", "classes")):
        with pytest.raises(ConfigError, match=f"model.{key}: expected one of"):
            from_dict(ModelConfig, {key: value}, "model")

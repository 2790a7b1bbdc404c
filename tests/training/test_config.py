"""Training config: presets load, strict keys and types, no test split for selection, overrides, TOML round trip."""


from pathlib import Path

import pytest

from mmsa.common.settings import from_dict, tomllib
from mmsa.model import ConfigError
from mmsa.training.config import TrainConfig, load_config, to_toml

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(p for p in (REPO / "configs" / "train").glob("*.toml") if p.name != "default.toml")

SOURCES = """
[[data.train]]
reader = "mosi"
labels = "x.csv"
split = "train"

[[data.valid]]
name = "mosi_valid"
reader = "mosi"
labels = "x.csv"
split = "valid"
"""


def cfg_file(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_round_trip(preset):
    cfg, _ = load_config(preset)
    assert cfg.data.train and cfg.data.valid
    assert all(s.split != "test" for s in cfg.data.valid)
    assert cfg.select.split(".")[0] in {s.key for s in cfg.data.valid}
    assert from_dict(TrainConfig, tomllib.loads(to_toml(cfg))) == cfg


def test_paper_hyperparameters_in_mosi_preset():
    cfg, _ = load_config(REPO / "configs" / "train" / "mosi.toml")
    assert (cfg.train.batch_size, cfg.train.bert_lr, cfg.train.lr) == (48, 1e-5, 1e-5)
    assert cfg.model.fusion == "attention" and cfg.model.fusion_layers == 5


def test_defaults_select_and_name(tmp_path):
    cfg, _ = load_config(cfg_file(tmp_path, SOURCES))
    assert cfg.select == "mosi_valid.mae" and cfg.checkpoint.name == "c"
    assert cfg.data.train[0].key == "mosi_train"


@pytest.mark.parametrize("extra, message", [
    ("[train]\nepochz = 3\n", r"train\.epochz: unknown key"),
    ("[train]\nbatch_size = \"big\"\n", r"train\.batch_size: expected an integer, got 'big'"),
    ("[train]\nselect = \"mosi_valid.acc9\"\n", r"train\.select: unknown metric 'acc9'"),
    ("[train]\nselect = \"mosi_test.mae\"\n", r"train\.select: 'mosi_test\.mae' must be <valid name>\.<metric>"),
    ("[[data.valid]]\nname = \"t\"\nreader = \"mosi\"\nlabels = \"x.csv\"\nsplit = \"test\"\n",
     r"data\.valid\[1\] \(t\): split 'test' cannot be used to select a model"),
    ("[[data.train]]\nreader = \"mosi\"\nlabels = \"x.csv\"\n", r"data\.train\[1\]: split: required"),
    ("[[data.train]]\nreader = \"imdb\"\nlabels = \"x.csv\"\nsplit = \"train\"\n",
     r"data\.train\[1\]\.reader: expected one of 'mosi', 'mosei'"),
    ("[[data.train]]\nreader = \"mosi\"\nlabels = \"x.csv\"\nsplit = \"valid\"\nmodalities = [\"smell\"]\n",
     r"modalities: unknown modality 'smell'"),
    ("[[data.train]]\nreader = \"mosi\"\nlabels = \"x.csv\"\nsplit = \"train\"\n",
     r"data\.train: two sources are named 'mosi_train'"),
    ("[[data.train]]\nname = \"more\"\nreader = \"mosi\"\nlabels = \"x.csv\"\nsplit = \"valid\"\n",
     r"data\.valid\[0\] \(mosi_valid\): shares rows with training source more"),
    ("[[data.train]]\nname = \"r\"\nreader = \"ravdess\"\nlabels = \"r.csv\"\nsplit = \"train\"\n"
     "[[data.valid]]\nname = \"rv\"\nreader = \"ravdess\"\nlabels = \"r.csv\"\nsplit = \"valid\"\nactors = [12, 13]\n",
     r"data\.valid\[1\] \(rv\): shares rows with training source r"),
])
def test_bad_configs_name_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(cfg_file(tmp_path, SOURCES + extra))


def test_no_validation_set_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.valid: at least one validation set"):
        load_config(cfg_file(tmp_path, SOURCES.split("[[data.valid]]")[0]))


def test_overrides_reach_tables_and_list_items(tmp_path):
    cfg, _ = load_config(cfg_file(tmp_path, SOURCES), [
        "train.epochs=3", "data.train.0.labels=/data/MOSI/label.csv", "data.valid.0.limit=5", "model.fusion=late",
    ])
    assert cfg.train.epochs == 3 and cfg.model.fusion == "late"
    assert cfg.data.train[0].labels == "/data/MOSI/label.csv" and cfg.data.valid[0].limit == 5
    with pytest.raises(ConfigError, match="'4' is not an index of a list of 1 tables"):
        load_config(cfg_file(tmp_path, SOURCES), ["data.train.4.labels=x"])


def test_documented_mixed_run_is_a_valid_config(tmp_path):
    """docs/training.md shows the default-model recipe (MOSI + VADER text, RAVDESS audio, FER faces)."""
    import re

    doc = (REPO / "docs" / "training.md").read_text()
    mixed = next(b for b in re.findall(r"```toml\n(.*?)```", doc, re.S) if 'reader = "vader"' in b)
    cfg, _ = load_config(cfg_file(tmp_path, mixed))
    assert [s.reader for s in cfg.data.train] == ["mosi", "vader", "ravdess", "fer2013"]
    assert cfg.model.fusion == "late" and cfg.checkpoint.bert_delta and cfg.train.freeze_bert_layers == 4

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


def test_the_same_label_file_spelled_otherwise_still_overlaps(tmp_path, monkeypatch):
    """Train and validation rows of one file are caught however the path is written: ``..``, a symlinked
    folder, a symlinked file, relative against absolute."""
    data = tmp_path / "data"
    data.mkdir()
    labels = data / "label.csv"
    labels.write_text("video_id,clip_id,text,label,mode\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "linked").symlink_to(data, target_is_directory=True)
    (tmp_path / "alias.csv").symlink_to(labels)
    monkeypatch.chdir(tmp_path)
    for spelling in (f"{tmp_path}/sub/../data/label.csv", "sub/../data/label.csv", f"{tmp_path}/linked/label.csv",
                     "linked/label.csv", "alias.csv", "./data//label.csv"):
        with pytest.raises(ConfigError, match=r"data\.valid\[0\] \(mosi_valid\): shares rows with training source"):
            load_config(cfg_file(tmp_path, SOURCES), [f"data.train.0.labels={labels}",
                                                      f"data.valid.0.labels={spelling}", "data.valid.0.split=train"])
    other = tmp_path / "sub" / "label.csv"  # another file of the same name
    other.write_text(labels.read_text())
    cfg, _ = load_config(cfg_file(tmp_path, SOURCES), [f"data.train.0.labels={labels}", f"data.valid.0.labels={other}",
                                                       "data.valid.0.split=train"])
    assert cfg.data.valid[0].labels == str(other)


@pytest.mark.parametrize("overrides, message", [
    (["model.fusion=attention", "model.fusion_heads=3"],
     r"model: fusion_heads: the attention fusion splits hidden_dim \(128\) into fusion_heads \(3\) equal parts"),
    (["model.fusion_heads=0"], r"model: fusion_heads: must be >= 1, got 0"),
    (["model.dropout=1.0"], r"model: dropout: must be in \[0, 1\), got 1.0"),
    (["model.dropout=-0.1"], r"model: dropout: must be in \[0, 1\), got -0.1"),
    (["model.late_weights=[0, 0, 0]"], r"model: late_weights: must be >= 0 with one > 0, got \(0.0, 0.0, 0.0\)"),
    (["model.late_weights=[1, -1, 1]"], r"model: late_weights: must be >= 0 with one > 0"),
    (["model.hidden_dim=0"], r"model: hidden_dim: must be >= 1, got 0"),
    (["model.hidden_dim=-8"], r"model: hidden_dim: must be >= 1, got -8"),
    (["model.inception_width=0"], r"model: inception_width: must be >= 1, got 0"),
    (["model.inception_channels=[4, 0]"], r"model: inception_channels: every layer needs >= 1 channel"),
    (["model.score_range=0"], r"model: score_range: must be > 0, got 0.0"),
    (["model.score_range=-3"], r"model: score_range: must be > 0, got -3.0"),
    (["loss.temperature=0"], r"loss: temperature: tau must be > 0, got 0.0"),
    (["loss.temperature=-0.1"], r"loss: temperature: tau must be > 0, got -0.1"),
    (["loss.text=-1"], r"loss: text: a loss weight must be >= 0 \(0: off\), got -1.0"),
    (["loss.unimodal=-0.5"], r"loss: unimodal: a loss weight must be >= 0"),
    (["loss.fused=-1"], r"loss: fused: a loss weight must be >= 0"),
    (["loss.audio=-1"], r"loss: audio: a loss weight must be >= 0"),
    (["loss.vision=-1"], r"loss: vision: a loss weight must be >= 0"),
])
def test_bad_model_and_loss_values_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(cfg_file(tmp_path, SOURCES), overrides)


def test_good_model_and_loss_edges_load(tmp_path):
    cfg, _ = load_config(cfg_file(tmp_path, SOURCES), [
        "model.fusion=attention", "model.fusion_heads=8", "model.dropout=0", "model.late_weights=[0, 0, 1]",
        "loss.temperature=0.05", "loss.text=0", "loss.fused=0"])
    assert cfg.model.fusion_heads == 8 and cfg.loss.fused == 0.0
    # a head count that does not divide the width only matters to the attention fusion
    cfg, _ = load_config(cfg_file(tmp_path, SOURCES), ["model.fusion=concat", "model.fusion_heads=3"])
    assert cfg.model.fusion_heads == 3


RAVDESS_AUDIO = REPO / "configs" / "train" / "ravdess_audio.toml"


@pytest.mark.parametrize("overrides, message", [
    (["data.valid.0.actors=[17,18,19,20]"], r"data\.valid\[0\] \(ravdess_valid\): actors 17, 18, 19, 20 are RAVDESS "
                                            r"test actors \(17, 18, 19, 20\) and cannot be used to select a model"),
    (["data.valid.0.actors=[13, 20]"], r"actors 20 are RAVDESS test actors"),
    (["data.valid.0.split=all"], r"data\.valid\[0\] \(ravdess_valid\): split 'all' would include test rows"),
    (["data.valid.0.split=all", "train.select=last"], r"split 'all' would include test rows"),
])
def test_validation_never_selects_on_ravdess_test_actors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RAVDESS_AUDIO, overrides)


def test_ravdess_test_actors_may_be_reported_and_other_actors_validated():
    cfg, _ = load_config(RAVDESS_AUDIO, ["data.valid.0.actors=[17,18,19,20]", "train.select=last"])
    assert cfg.data.valid[0].actors == (17, 18, 19, 20)  # only reported: nothing is selected on them
    cfg, _ = load_config(RAVDESS_AUDIO, ["data.valid.0.actors=[13, 14]", "data.valid.0.split=all"])
    assert cfg.data.valid[0].actors == (13, 14)  # explicit actors decide the rows, not the split
    twin, _ = load_config(REPO / "configs" / "train" / "default" / "heldout" / "3_audio_actors_1-16.toml")
    assert twin.select == "last" and {s.split for s in twin.data.valid} == {"test"}  # the shipped twin still loads


@pytest.mark.parametrize("reader", ["fer2013", "vader"])
def test_validation_never_uses_a_hash_split_readers_test_or_all(tmp_path, reader):
    text = SOURCES + f'\n[[data.valid]]\nname = "h"\nreader = "{reader}"\nlabels = "h.csv"\nsplit = "SPLIT"\n'
    with pytest.raises(ConfigError, match=r"data\.valid\[1\] \(h\): split 'all' would include test rows"):
        load_config(cfg_file(tmp_path, text.replace("SPLIT", "all")), ["train.select=last"])
    with pytest.raises(ConfigError, match=r"data\.valid\[1\] \(h\): split 'test' cannot be used to select a model"):
        load_config(cfg_file(tmp_path, text.replace("SPLIT", "test")))
    cfg, _ = load_config(cfg_file(tmp_path, text.replace("SPLIT", "valid")))
    assert cfg.data.valid[1].reader == reader

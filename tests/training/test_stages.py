"""Trainer features of the chained default-model build: trainable parts, frozen BERT embeddings in
eval mode, AdamW with warm-up and decay, class-balanced emotion sources, stage metadata, and the
stage configs of configs/train/default/."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmsa.model import ConfigError, MMSAModel, collate, load_checkpoint, read_info
from mmsa.model.encoders import ImageEncoder
from mmsa.training.cache import SampleStore
from mmsa.training.cli import train_main
from mmsa.training.config import TrainConfig, TrainOptions, load_config
from mmsa.training.data import Record, SourceData
from mmsa.training.optim import build_optimizer, build_scheduler, freeze, lr_factor, part_of, train_mode
from mmsa.training.sampling import MixedDataset, MixtureBatchSampler
from tests.model.helpers import random_sample, seeded, tiny_config
from tests.training.conftest import write_config

REPO = Path(__file__).resolve().parents[2]
STAGES = sorted((REPO / "configs" / "train" / "default").glob("*.toml"))
TWIN = REPO / "configs" / "train" / "default" / "heldout" / "3_audio_actors_1-16.toml"


def tiny_model(tiny_bert, **kw) -> MMSAModel:
    torch.manual_seed(0)
    return MMSAModel.build(tiny_config(tiny_bert, **kw), tiny_bert)


def snapshot(model: MMSAModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_step(model: MMSAModel, opts: TrainOptions, tokenizer) -> None:
    """Freeze per ``opts``, then one Adam step on a batch with every modality present."""
    _, eval_modules = freeze(model, opts)
    train_mode(model, eval_modules)
    rng = seeded(1)
    batch = collate([random_sample(rng), random_sample(rng, text="awful"), random_sample(rng, n_faces=3)], tokenizer)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(batch)
    loss = out.score.sum() + sum(s.sum() for s in out.unimodal.values())
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name, part", [
    ("text.bert.encoder.layer.0.output.dense.weight", "text"), ("text_proj.weight", "text"),
    ("heads.text.0.weight", "text"), ("audio.layers.0.0.weight", "audio"), ("heads.audio.3.bias", "audio"),
    ("vision.post1.1.running_mean", "vision"), ("heads.vision.0.weight", "vision"),
    ("fusion.0.weight", "fusion"), ("cls", "fusion"), ("fusion_encoder.layers.0.linear1.weight", "fusion"),
])
def test_parts_of_parameter_names(name, part):
    assert part_of(name) == part


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_trainable_audio_changes_nothing_else_not_even_batchnorm_statistics(tiny_bert, tokenizer, fusion):
    model = tiny_model(tiny_bert, fusion=fusion)
    before = snapshot(model)
    one_step(model, TrainOptions(trainable=("audio",)), tokenizer)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(part_of(k) == "audio" for k in changed), sorted(changed)[:5]
    assert any(k.endswith("running_mean") for k in changed)  # the audio branch itself did train
    # frozen parts run in eval mode: no dropout, no BatchNorm statistics update
    assert model.training and model.audio.training and model.heads["audio"].training
    assert not model.vision.training and not model.text.training and not model.heads["text"].training


def test_without_trainable_everything_trains_as_before(tiny_bert, tokenizer):
    model = tiny_model(tiny_bert)
    before = snapshot(model)
    one_step(model, TrainOptions(), tokenizer)
    changed = {part_of(k) for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"text", "audio", "vision", "fusion"}


def test_frozen_bert_embeddings_run_in_eval_mode(tiny_bert, tokenizer):
    model = tiny_model(tiny_bert)
    before = snapshot(model)
    n, eval_modules = freeze(model, TrainOptions(freeze_bert_embeddings=True, trainable=("text",)))
    assert n == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert all(not p.requires_grad for p in model.text.bert.embeddings.parameters())
    assert all(p.requires_grad for p in model.text.bert.encoder.parameters())
    train_mode(model, eval_modules)
    assert not model.text.bert.embeddings.training and model.text.bert.encoder.training
    one_step(model, TrainOptions(freeze_bert_embeddings=True, trainable=("text",)), tokenizer)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("text.bert.embeddings."))
    assert not torch.equal(before["text.bert.encoder.layer.0.output.dense.weight"],
                           after["text.bert.encoder.layer.0.output.dense.weight"])


def test_trainable_that_leaves_nothing_is_refused(tiny_bert):
    model = tiny_model(tiny_bert, fusion="late")  # late fusion has no fusion parameters
    with pytest.raises(ConfigError, match=r"train\.trainable: \['fusion'\] leaves nothing to train"):
        freeze(model, TrainOptions(trainable=("fusion",)))


@pytest.mark.parametrize("schedule, expect", [
    ("constant", [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.25, 0.5, 0.75, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]),
])
def test_warmup_then_decay(schedule, expect):
    assert [lr_factor(s, 8, 0.5, schedule) for s in range(8)] == pytest.approx(expect)
    assert lr_factor(0, 8, 0.0, "linear") == 1.0


def test_adamw_and_scheduler_follow_the_config(tiny_bert):
    model = tiny_model(tiny_bert)
    cfg = TrainConfig(train=TrainOptions(optimizer="adamw", weight_decay=0.01, schedule="linear", warmup=0.25,
                                         epochs=2, lr=1e-3, bert_lr=3e-5))
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW) and {g["name"] for g in opt.param_groups} == {"model", "bert"}
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)  # 8 steps, 2 of warm-up
    lrs = []
    for _ in range(8):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [x["model"] for x in lrs] == pytest.approx([1e-3 * f for f in (0.5, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)])
    assert lrs[1]["bert"] == pytest.approx(3e-5)
    assert isinstance(build_optimizer(model, TrainConfig()), torch.optim.Adam)
    assert build_scheduler(opt, TrainConfig(), 4) is None  # constant, no warm-up: the old behaviour


def test_sgd_for_the_papers_table_4(tiny_bert):
    """train.optimizer = "sgd": SGD with momentum over the same two groups; a step lowers the loss."""
    model = tiny_model(tiny_bert)
    cfg = TrainConfig(train=TrainOptions(optimizer="sgd", momentum=0.8, weight_decay=1e-4, lr=0.05, bert_lr=0.01))
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    assert {g["name"]: (g["lr"], g["momentum"], g["weight_decay"]) for g in opt.param_groups} == {
        "model": (0.05, 0.8, 1e-4), "bert": (0.01, 0.8, 1e-4)}
    head = model.heads["audio"]
    x, y = torch.randn(16, model.dims["audio"]), torch.randn(16, 1)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.mse_loss(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def _emotion_store(labels: list[float], name: str) -> SampleStore:
    from mmsa.training.config import SourceConfig

    cfg = SourceConfig(reader="ravdess", labels="x.csv", split="train", name=name, balance=True)
    return SampleStore(SourceData(cfg, [Record(f"{name}{i}", y) for i, y in enumerate(labels)], ("audio",)))


def test_balanced_source_draws_every_class_equally_often():
    emo = _emotion_store([-2.0] * 12 + [0.0] * 3 + [2.0] * 1, "e")  # 16 rows
    other = _emotion_store([0.0] * 16, "o")
    sampler = MixtureBatchSampler(MixedDataset([emo, other]), [1.0, 1.0], batch_size=8, seed=3,
                                  epoch_samples=30000, group_by_length=False, balance=[True, False])
    drawn = [i for b in sampler for i in b]
    labels = [emo.records[i].label for i in drawn if i < 16]
    assert abs(len(labels) / len(drawn) - 0.5) < 0.02  # the source keeps its share
    for y in (-2.0, 0.0, 2.0):
        assert abs(labels.count(y) / len(labels) - 1 / 3) < 0.02
    plain = MixtureBatchSampler(MixedDataset([emo]), [1.0], batch_size=8, seed=3, group_by_length=False)
    assert sorted(i for b in plain for i in b) == list(range(16))  # unbalanced: a permutation, as before


@pytest.mark.parametrize("extra, message", [
    ('[[data.train]]\nname = "m"\nreader = "mosi"\nlabels = "m.csv"\nsplit = "train"\nbalance = true\n',
     r"balance: only for emotion sources"),
    ('[train]\ntrainable = ["txt"]\n', r"trainable: unknown part 'txt'"),
    ('[train]\nwarmup = 1.5\n', r"warmup: must be a fraction"),
    ('[train]\noptimizer = "rmsprop"\n', r"train\.optimizer: expected one of 'adam', 'adamw', 'sgd'"),
    ('[train]\noptimizer = "sgd"\nmomentum = 1.0\n', r"momentum: must be in \[0, 1\)"),
])
def test_bad_stage_options_name_the_key(tmp_path, extra, message):
    base = ('[[data.valid]]\nname = "v"\nreader = "ravdess"\nlabels = "r.csv"\nsplit = "valid"\n'
            '[[data.train]]\nname = "r"\nreader = "ravdess"\nlabels = "r.csv"\nsplit = "train"\n')
    path = tmp_path / "c.toml"
    path.write_text(extra + base if extra.startswith("[train]") else base + extra)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_chained_stages_keep_earlier_branches_and_record_every_stage(mmsa_raw, ravdess_like, tiny_bert, tmp_path):
    """Stage 1 trains the text branch, stage 2 only audio from it: text weights identical, both stages in the metadata."""
    common = dict(cache=tmp_path / "cache", checkpoint={"bert_delta": True, "half": True})
    text = write_config(
        tmp_path / "text.toml", tiny_bert, **common,
        sources=[{"name": "t", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train", "modalities": ["text"]}],
        valid=[{"name": "tv", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid", "modalities": ["text"]}],
        train={"epochs": 2, "batch_size": 2, "optimizer": "adamw", "weight_decay": 0.01, "schedule": "linear",
               "warmup": 0.2, "freeze_bert_embeddings": True, "trainable": ["text"]},
    )
    audio = write_config(
        tmp_path / "audio.toml", tiny_bert, **common,
        sources=[{"name": "a", "reader": "ravdess", "labels": str(ravdess_like), "split": "train", "balance": True}],
        valid=[{"name": "av", "reader": "ravdess", "labels": str(ravdess_like), "split": "valid"},
               {"name": "tv", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid", "modalities": ["text"]}],
        train={"epochs": 2, "batch_size": 2, "bert_lr": 0.0, "trainable": ["audio"],
               "init_from": str(tmp_path / "r1" / "model.safetensors"), "select": "av.valence_uar3"},
    )
    for path in (text, audio):
        path.write_text(path.read_text().replace("[model]", '[model]\nfusion = "late"', 1))
    assert train_main([str(text), "--out", str(tmp_path / "r1")]) == 0
    assert train_main([str(audio), "--out", str(tmp_path / "r2")]) == 0
    first, second = (load_checkpoint(tmp_path / r / "model.safetensors") for r in ("r1", "r2"))
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if part_of(k) != "audio")
    assert any(not torch.equal(a[k], b[k]) for k in a if part_of(k) == "audio")
    # the text scores of stage 2 are those of stage 1 (stage 1 validated in float32, stored float16)
    m1 = json.loads((tmp_path / "r1" / "metrics.json").read_text())["valid"]["tv"]
    m2 = json.loads((tmp_path / "r2" / "metrics.json").read_text())["valid"]["tv"]
    assert m1["mae"] == pytest.approx(m2["mae"], abs=1e-3)
    info = read_info(tmp_path / "r2" / "model.safetensors")
    stages = info.training["stages"]
    assert [s["name"] for s in stages] == ["text", "audio"]
    assert [[d["reader"] for d in s["data"]] for s in stages] == [["mmsa-raw"], ["ravdess"]]
    assert stages[0]["trainable"] == ["text"] and "mmsa-train" in stages[0]["command"]
    assert info.training["init_from"]["model"] == first.info.tag
    # frozen embeddings are not in the delta checkpoint
    from safetensors import safe_open

    with safe_open(str(tmp_path / "r1" / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
    assert not any(k.startswith("text.bert.embeddings.") for k in keys)
    assert any(k.startswith("text.bert.encoder.layer.0.") for k in keys)


def test_a_face_stage_may_change_only_the_vision_branch(ravdess_like, fer_like, tiny_bert, tmp_path, capsys):
    """Stage 2 adds the face mesh and a classifying vision head to stage 1's model: the new vision
    tensors start fresh, everything else is stage 1's; a change outside the trained part is refused."""
    from mmsa.training.cli import eval_main

    common = dict(cache=tmp_path / "cache", checkpoint={"bert_delta": True, "half": True})
    audio = write_config(
        tmp_path / "audio.toml", tiny_bert, **common, model={"fusion": "late"},
        sources=[{"name": "a", "reader": "ravdess", "labels": str(ravdess_like), "split": "train", "balance": True}],
        valid=[{"name": "av", "reader": "ravdess", "labels": str(ravdess_like), "split": "valid"}],
        train={"epochs": 1, "batch_size": 2, "bert_lr": 0.0, "trainable": ["audio"], "select": "av.valence_uar3"},
    )
    face = dict(
        sources=[{"name": "f", "reader": "fer2013", "labels": str(fer_like), "split": "train", "balance": True}],
        valid=[{"name": "fv", "reader": "fer2013", "labels": str(fer_like), "split": "valid"}],
        train={"epochs": 2, "batch_size": 4, "bert_lr": 0.0, "trainable": ["vision"], "select": "fv.valence_uar3",
               "init_from": str(tmp_path / "r1" / "model.safetensors")},
        loss={"task": "mse", "fused": 0.0, "unimodal": 1.0, "label_smoothing": 0.1, "text": 0.0, "audio": 0.0, "vision": 0.0},
    )
    vision = write_config(tmp_path / "face.toml", tiny_bert, **common, **face,
                          model={"fusion": "late", "face_mesh": "packaged", "vision_head": "valence3"})
    assert train_main([str(audio), "--out", str(tmp_path / "r1")]) == 0
    assert train_main([str(vision), "--out", str(tmp_path / "r2")]) == 0
    first, second = (load_checkpoint(tmp_path / r / "model.safetensors") for r in ("r1", "r2"))
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if part_of(k) != "vision")
    assert second.model.heads["vision"][-1].out_features == 3 and second.model.vision.mesh is not None
    assert not any(".mesh." in k for k in b)  # the frozen face mesh comes from the package, not the checkpoint
    log = (tmp_path / "r2" / "train.log").read_text()
    assert re.search(r"\d+ tensors of vision start fresh", log)
    # the frozen networks' outputs were remembered per crop, and that changed no weight: the same stage with
    # the frozen networks run on every step gives the same checkpoint bit for bit
    assert "the frozen face networks' outputs are kept per crop (up to 2048 MiB)" in log
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageEncoder, "remember", lambda self, budget_bytes=0: None)
        assert train_main([str(vision), "--out", str(tmp_path / "r2_every_step")]) == 0
    plain = load_checkpoint(tmp_path / "r2_every_step" / "model.safetensors").model.state_dict()
    assert plain.keys() == b.keys() and all(torch.equal(plain[k], b[k]) for k in b)
    # the shipped-style checkpoint scores faces with mmsa-eval (scores are class margins in [-3, 3])
    out = tmp_path / "fer.json"
    assert eval_main(["--model", str(tmp_path / "r2" / "model.safetensors"), "--dataset", "fer2013", "--labels",
                      str(fer_like), "--split", "all", "--out", str(out), "--predictions", str(tmp_path / "p.csv")]) == 0
    assert json.loads(out.read_text())["n"] > 0
    # the same stage that would also change the audio branch is refused, naming a tensor
    bad = write_config(tmp_path / "bad.toml", tiny_bert, **common, **face,
                       model={"fusion": "late", "audio_channels": [4, 8, 8], "vision_head": "valence3"})
    assert train_main([str(bad), "--out", str(tmp_path / "r3")]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"error: train\.init_from: .* does not fit this model \(e\.g\. tensor audio\.", err)
    # a stage without faces (the face model's audio branch on RAVDESS) keeps no face memo and says none
    voice = write_config(tmp_path / "voice.toml", tiny_bert, **common, model={"fusion": "late", "face_mesh": "packaged",
                                                                             "vision_head": "valence3"},
                         sources=[{"name": "a", "reader": "ravdess", "labels": str(ravdess_like), "split": "train"}],
                         valid=[{"name": "av", "reader": "ravdess", "labels": str(ravdess_like), "split": "valid"}],
                         train={"epochs": 1, "batch_size": 2, "bert_lr": 0.0, "trainable": ["audio"], "select": "last"})
    assert train_main([str(voice), "--out", str(tmp_path / "r4")]) == 0
    assert "kept per crop" not in (tmp_path / "r4" / "train.log").read_text()


# --------------------------------------------------------------------------- configs/train/default


def test_default_build_stages_load_and_chain():
    assert [p.stem for p in STAGES] == ["1_text_vader", "2_text", "3_audio", "4_face"]
    cfgs = [load_config(p)[0] for p in STAGES]
    twin = load_config(TWIN)[0]
    model = cfgs[2].model
    assert model.fusion == "calibrated" and model.bert == "packaged" and model.audio_input == "whisper"
    assert (model.face_mesh, model.face_cnn, model.vision_head, model.audio_head) == ("packaged", "mesh", "valence3",
                                                                                        "valence3")
    audio_branch = {k: getattr(model, k) for k in ("audio_input", "audio_channels", "audio_bands")}
    assert cfgs[3].model.face_expression == "packaged" and model.face_expression == "none"
    for k, (prev, cfg) in enumerate(zip([None, *STAGES], cfgs)):
        # init_from needs one architecture, but for the audio branch of the text stages (stage 3 trains it
        # anew) and the expression network's projection in the face branch (stage 4 adds and trains it)
        arch = replace(cfg.model, face_expression="none")
        assert (arch if k >= 2 else replace(arch, **audio_branch)) == model
        assert cfg.checkpoint.bert_delta and cfg.checkpoint.half
        # a test split is only ever reported, never selected on
        assert cfg.select == "last" or all(s.split != "test" for s in cfg.data.valid)
        assert cfg.train.init_from == ("" if prev is None else f"runs/default-model/{prev.stem}/model.safetensors")
    assert [c.train.trainable for c in cfgs] == [("text",), ("text",), ("audio",), ("vision",)]
    # stage 4: three seeds of the face recipe kept as an ensemble (the others: one run each)
    assert [c.train.ensemble for c in cfgs] == [(), (), (), (1, 2, 3)] and not any(c.train.soup for c in cfgs)
    assert [[s.reader for s in c.data.train] for c in cfgs] == [["vader"], ["mosi", "mosei"], ["ravdess", "ravdess"],
                                                                ["fer2013"]]
    assert cfgs[0].data.train[0].split == "all"  # VADER: every sentence (rescaled [-4, 4] -> [-3, 3] by the reader)
    # text: MOSEI valid split by video, the held-out videos only reported; selected on MOSI valid
    mosei_train, mosei_heldout = cfgs[1].data.train[1], cfgs[1].data.valid[1]
    assert (mosei_train.videos, mosei_heldout.videos) == ("train", "heldout") and cfgs[1].select == "mosi_valid.mae"
    # audio: every actor, the last epoch, the files and the monitor's windows of them (the Makefile writes those
    # to runs/default-model/ravdess_windows first); its twin: actors 01-16, actors 17-20 only reported, both ways
    files, windows = cfgs[2].data.train
    assert files.labels.endswith("ravdess/labels.csv") and windows.labels == "runs/default-model/ravdess_windows/labels.csv"
    assert files.actors == windows.actors == tuple(range(1, 21)) and cfgs[2].select == "last"
    assert [s.actors for s in twin.data.train] == [tuple(range(1, 17))] * 2 and twin.select == "last"
    assert [(s.reader, s.split, s.actors, s.labels) for s in twin.data.valid] == [
        ("ravdess", "test", (), files.labels), ("ravdess", "test", (), windows.labels)]
    assert replace(twin, data=cfgs[2].data, checkpoint=cfgs[2].checkpoint) == cfgs[2]  # the same recipe otherwise
    # faces: FER2013 train, the last of the epochs the cross-validation chose (examples/face_cv.py); valid only reported
    assert cfgs[3].data.train[0].split == "train" and cfgs[3].select == "last" and cfgs[3].train.epochs == 7
    assert cfgs[-1].checkpoint.name == "default"
    assert {s.key for s in cfgs[-1].data.valid} == {"mosi_valid", "fer_valid"}


def test_makefile_builds_the_stages_in_order_and_ships_the_fitted_fusion():
    make = (REPO / "Makefile").read_text()
    target = make[make.index("default-model:"):]
    target = target[: target.index("\n\n")]
    assert "configs/train/default/" in make and "mmsa-train" in target
    assert str(TWIN.relative_to(REPO)) in make
    fit = target.index("mmsa-fit-fusion")
    assert fit > target.index("done;") and "--heldout-model audio" in target
    # stage 3 and its twin read the windows examples/ravdess_windows.py writes (the configs' second train source)
    assert "examples/ravdess_windows.py $(WINDOWS)" in target and "data.train.1.labels=$(WINDOWS)/labels.csv" in target
    assert re.search(r"cp \S+/5_fusion/model\.safetensors model/default/default\.safetensors", target)


def test_stage_options_round_trip_through_the_resolved_toml():
    from mmsa.common.settings import from_dict, tomllib
    from mmsa.training.config import to_toml

    cfg = load_config(STAGES[2])[0]
    cfg = replace(cfg, train=replace(cfg.train, freeze_bert_embeddings=True))
    assert from_dict(TrainConfig, tomllib.loads(to_toml(cfg))) == cfg

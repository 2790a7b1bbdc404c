"""``[train] soup``: one run per seed, then the average of their trained weights (a uniform model soup)
as the run's checkpoint, scored on the validation sets."""

import json

import pytest
import torch
from safetensors import safe_open

from mmsa.model import load_checkpoint, read_info
from mmsa.training.cli import eval_main, train_main
from mmsa.training.soup import average_state
from tests.training.conftest import write_config
from tests.training.test_cli_errors import one_error_line


def text_config(tmp_path, mmsa_raw, tiny_bert, **train):
    """The default model's stage-2 set-up in small: text only, BERT's embeddings frozen, a BERT-delta checkpoint."""
    return write_config(
        tmp_path / "text.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train", "modalities": ["text"]}],
        valid=[{"name": "v", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid", "modalities": ["text"]}],
        train={"epochs": 2, "batch_size": 2, "trainable": ["text"], "freeze_bert_embeddings": True, **train},
        checkpoint={"bert_delta": True},
    )


def test_the_soup_averages_the_trained_part_of_every_seed_and_is_scored(mmsa_raw, tiny_bert, tmp_path):
    cfg = text_config(tmp_path, mmsa_raw, tiny_bert, soup=[1, 2, 3])
    out = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(out)]) == 0
    seeds = [load_checkpoint(str(out / f"seed{s}" / "model.safetensors")).model.state_dict() for s in (1, 2, 3)]
    soup = load_checkpoint(str(out / "model.safetensors")).model.state_dict()
    text = [k for k in soup if k.startswith(("text.", "text_proj.", "heads.text.")) and soup[k].is_floating_point()]
    assert text and any(not torch.equal(seeds[0][k], seeds[1][k]) for k in text)  # the seeds differ ...
    for k in text:  # ... and the soup is their mean
        assert torch.allclose(soup[k], sum(s[k] for s in seeds) / 3, atol=1e-6), k
    frozen = [k for k in soup if k.startswith(("audio.", "heads.audio.", "vision.", "heads.vision."))]
    assert frozen and all(torch.equal(soup[k], seeds[0][k]) for k in frozen)  # untrained parts: as they were
    # tensors equal in every run (frozen) are kept bit for bit, so the checkpoint stores what a run stores
    with safe_open(str(out / "model.safetensors"), framework="pt") as a, \
            safe_open(str(out / "seed1" / "model.safetensors"), framework="pt") as b:
        assert set(a.keys()) == set(b.keys())

    info = read_info(out / "model.safetensors")
    assert [r["seed"] for r in info.training["soup"]] == [1, 2, 3]
    assert info.training["stages"][-1]["seed"] == [1, 2, 3] and len(info.training["stages"][-1]["soup"]) == 3
    report = json.loads((out / "soup.json").read_text())
    assert report["soup"] == [1, 2, 3] and report["runs"]["n_runs"] == 3
    assert info.metrics["v"]["mae"] == pytest.approx(report["valid"]["v"]["mae"])
    assert (out / "valid_v.csv").is_file() and (out / "aggregate.json").is_file()
    # mmsa-eval of the soup's checkpoint gives the figure the soup was saved with
    ev = tmp_path / "ev.json"
    assert eval_main(["--model", str(out / "model.safetensors"), "--dataset", "mmsa-raw", "--labels", str(mmsa_raw),
                      "--split", "valid", "--modalities", "text", "--out", str(ev),
                      "--predictions", str(tmp_path / "p.csv")]) == 0
    assert json.loads(ev.read_text())["mae"] == pytest.approx(report["valid"]["v"]["mae"], abs=1e-5)


def test_average_state_refuses_runs_of_other_models():
    a = {"text.w": torch.ones(2), "n": torch.tensor(3)}
    b = {"text.w": torch.zeros(3), "n": torch.tensor(4)}
    with pytest.raises(Exception, match="run 2 does not have the same tensors"):
        average_state([a, b], ("text",))
    mixed = average_state([a, {"text.w": torch.zeros(2), "n": torch.tensor(4)}], ("text",))
    assert torch.equal(mixed["text.w"], torch.full((2,), 0.5)) and int(mixed["n"]) == 3  # counters: the first run's


@pytest.mark.parametrize("soup", [[1], [2, 2]])
def test_a_soup_needs_two_seeds(mmsa_raw, tiny_bert, tmp_path, capsys, soup):
    cfg = text_config(tmp_path, mmsa_raw, tiny_bert, soup=soup)
    assert train_main([str(cfg), "--out", str(tmp_path / "run")]) != 0
    assert "soup: needs two different seeds or more" in one_error_line(capsys)


def test_seeds_and_a_soup_are_one_line_of_error(mmsa_raw, tiny_bert, tmp_path, capsys):
    cfg = text_config(tmp_path, mmsa_raw, tiny_bert, soup=[1, 2])
    assert train_main([str(cfg), "--out", str(tmp_path / "run"), "--seeds", "1", "2"]) != 0
    assert "--seeds and train.soup" in one_error_line(capsys)

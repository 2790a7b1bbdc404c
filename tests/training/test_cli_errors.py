"""Bad input to mmsa-train / mmsa-eval: one clear line on stderr and a non-zero exit, no traceback."""

import csv

import pytest

from mmsa.training.cli import eval_main, train_main
from tests.training.conftest import write_config


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


def eval_args(tmp_path, labels, dataset="mmsa-raw", split="test"):
    return ["--model", "default", "--dataset", dataset, "--labels", str(labels), "--split", split,
            "--out", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.csv"), "--cache", str(tmp_path / "c")]


def write(path, rows):
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


HEADER = ["video_id", "clip_id", "text", "label", "annotation", "mode"]


def test_malformed_label_file(tmp_path, capsys):
    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "test"],
                                            ["v", 2, "bad", "minus one", "Negative", "test"]])
    assert eval_main(eval_args(tmp_path, labels, dataset="mosi")) == 1
    line = one_error_line(capsys)
    assert line.endswith("label.csv:3: column 4 (label): expected a number, got 'minus one'")


def test_missing_media_file(tmp_path, capsys):
    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "test"]])
    assert eval_main(eval_args(tmp_path, labels)) == 1
    line = one_error_line(capsys)
    assert "label.csv:2: media file not found:" in line and line.endswith("Raw/v/1.mp4")


def test_empty_split(tmp_path, capsys):
    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "train"]])
    assert eval_main(eval_args(tmp_path, labels, dataset="mosi")) == 1
    assert one_error_line(capsys).endswith("label.csv: no rows for split 'test' (modes in the file: train)")


def test_missing_default_model_is_one_line(tmp_path, capsys, monkeypatch):
    import mmsa.model.resources

    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "test"]])
    # as in a checkout where it was never built (the repo ships it)
    monkeypatch.setattr(mmsa.model.resources, "DEFAULT_CHECKPOINT", tmp_path / "default.safetensors")
    assert eval_main(eval_args(tmp_path, labels, dataset="mosi")) != 0
    assert "the embedded default model is missing" in one_error_line(capsys)


def test_train_with_an_empty_training_split(tmp_path, tiny_bert, capsys):
    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "valid"]])
    cfg = write_config(tmp_path / "t.toml", tiny_bert, tmp_path / "cache",
                       [{"reader": "mosi", "labels": str(labels), "split": "train"}],
                       [{"reader": "mosi", "labels": str(labels), "split": "valid"}])
    assert train_main([str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert one_error_line(capsys).endswith("no rows for split 'train' (modes in the file: valid)")


def test_train_config_errors_exit_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nepochs = 'many'\n")
    assert train_main([str(cfg)]) == 2
    assert "train.epochs: expected an integer, got 'many'" in one_error_line(capsys)


@pytest.mark.parametrize("change, message", [
    ({"--labels": ""}, "error: --labels: the label file is required"),
    ({"--split": ""}, "error: --split: required (train, valid, test or all)"),
    ({"--dataset": "ravdess", "--videos": "train"},
     "error: --videos: only for sources split by a mode column (mosi, mosei, mmsa-raw), not ravdess"),
])
def test_bad_eval_source_options_are_one_line(tmp_path, capsys, change, message):
    labels = write(tmp_path / "label.csv", [HEADER, ["v", 1, "good", "1.0", "Positive", "test"]])
    args = eval_args(tmp_path, labels, dataset="mosi")
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert eval_main(args) == 2
    assert one_error_line(capsys).startswith(message)


@pytest.mark.parametrize("flag", ["--out", "--predictions", "--plot"])
def test_eval_output_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys, flag):
    # the label file does not exist: a check made after reading the data would name it instead
    args = eval_args(tmp_path, tmp_path / "missing.csv", dataset="mosi") + (["--plot", "x.png"] if flag == "--plot" else [])
    args[args.index(flag) + 1] = str(tmp_path)
    assert eval_main(args) == 2
    assert one_error_line(capsys) == f"error: {flag} {tmp_path}: is a folder; give the path of the file to write"


def test_eval_output_under_a_file_and_bad_counts_are_one_line(tmp_path, capsys):
    labels = tmp_path / "missing.csv"
    blocker = write(tmp_path / "file.txt", [["x"]])
    args = eval_args(tmp_path, labels, dataset="mosi")
    args[args.index("--out") + 1] = str(blocker / "m.json")
    assert eval_main(args) == 2
    assert one_error_line(capsys) == f"error: --out {blocker / 'm.json'}: {blocker} is not a folder"
    for flag in ("--batch-size", "--workers"):
        assert eval_main([*eval_args(tmp_path, labels, dataset="mosi"), flag, "0"]) == 2
        assert one_error_line(capsys) == f"error: {flag}: must be >= 1, got 0"

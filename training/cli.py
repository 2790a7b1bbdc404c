"""Entry points ``mmsa-train`` and ``mmsa-eval`` (ARCHITECTURE section 8)."""

from __future__ import annotations

import argparse
import sys

from mmsa.model.errors import run_cli


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-train",
        description="Train the fusion model on CMU-MOSI / CMU-MOSEI (and RAVDESS / FER2013 branches) from a TOML config.",
    )
    p.add_argument("config", help="training config, e.g. configs/train/mosi_text.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=3")
    p.add_argument("--out", help="run folder (default: runs/<config name>-<time>)")
    return p


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsa-eval", description="Evaluate a checkpoint with the MMSA metrics.")
    p.add_argument("--model", default="default", help="default (the embedded model) or a checkpoint path")
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "mmsa-raw", "ravdess", "fer2013"])
    p.add_argument("--labels", required=True, help="label CSV")
    p.add_argument("--root", help="media root for relative paths")
    p.add_argument("--split", default="test", help="rows whose mode equals this (default: test)")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--predictions", required=True, help="predictions CSV to write")
    return p


def _train(argv: list[str] | None) -> int:
    _train_parser().parse_args(argv)
    print("mmsa-train: training is not built yet", file=sys.stderr)
    return 2


def _eval(argv: list[str] | None) -> int:
    _eval_parser().parse_args(argv)
    print("mmsa-eval: evaluation is not built yet", file=sys.stderr)
    return 2


def train_main(argv: list[str] | None = None) -> int:
    return run_cli(_train, argv)


def eval_main(argv: list[str] | None = None) -> int:
    return run_cli(_eval, argv)


if __name__ == "__main__":
    sys.exit(train_main())

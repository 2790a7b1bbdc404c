"""Averaging the text branch's weights of two checkpoints (WiSE-FT), scored on MOSI valid and the held-out
MOSEI videos: the model card's "Tried, not shipped" paragraph of the text branch.

Every floating-point weight of the text branch (BERT, its projection, the text head) becomes
(1 - a) x FIRST + a x SECOND, nothing is trained, and the text head is scored at each ``--alpha``::

    .venv/bin/python examples/text_soup.py runs/default-model/1_text_vader/model.safetensors \\
        runs/default-model/2_text/model.safetensors --alpha 1 0.85 0.7 0.5 0.3 0   # [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

TEXT_PREFIXES = ("text.", "text_proj.", "heads.text.")


def text_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point weights of the text branch in a model's state dict."""
    return [k for k, v in state.items() if k.startswith(TEXT_PREFIXES) and v.is_floating_point()]


def soup(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``second`` with its text-branch weights replaced by (1 - alpha) first + alpha second."""
    return {**second, **{k: (1 - alpha) * first[k] + alpha * second[k] for k in text_keys(second)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path, help="checkpoint weighed 1 - a (e.g. stage 1)")
    ap.add_argument("second", type=Path, help="checkpoint weighed a, whose other branches are kept (e.g. stage 2)")
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.7, 0.5, 0.0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args(argv)
    need = [args.first, args.second, args.data / "mosi" / "label.csv", args.data / "mosei" / "label_valid.csv"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        print(f"text_soup: missing {', '.join(missing)}", file=sys.stderr)
        return 2

    from mmsa.model import load_checkpoint
    from mmsa.training.cache import featurize
    from mmsa.training.config import CacheConfig, SourceConfig
    from mmsa.training.data import read_source
    from mmsa.training.evaluate import predict
    from mmsa.training.metrics import regression_metrics

    a, b = load_checkpoint(str(args.first), device="cpu"), load_checkpoint(str(args.second), device="cpu")
    first = {k: v.clone() for k, v in a.model.state_dict().items()}
    second = {k: v.clone() for k, v in b.model.state_dict().items()}
    sets = [SourceConfig(reader="mosi", labels=str(args.data / "mosi" / "label.csv"), split="valid",
                         modalities=("text",), name="mosi_valid"),
            SourceConfig(reader="mosei", labels=str(args.data / "mosei" / "label_valid.csv"), split="valid",
                         videos="heldout", modalities=("text",), name="mosei_valid_heldout")]
    data = [read_source(s) for s in sets]
    stores = [featurize(d, CacheConfig(), b.features) for d in data]
    print(f"{len(text_keys(second))} text-branch weights; MAE / Acc-2 non0 / Corr of the text head")
    for alpha in args.alpha:
        b.model.load_state_dict(soup(first, second, alpha))
        cells = []
        for src, d, store in zip(sets, data, stores):
            m = regression_metrics([r.label for r in d.records], predict(b.model, store, b.tokenizer, b.features).unimodal["text"])
            cells.append(f"{src.name} {m['mae']:.3f} / {100 * m['acc2_non0']:.1f} / {m['corr']:.3f}")
        print(f"a = {alpha:.2f}: " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

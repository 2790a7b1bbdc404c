"""The calibrated fusion under another class prior: what the model card's "target prior" paragraph measures.

The calibrated fusion (``fusion = "calibrated"``) multiplies the heads' calibrated polarity
probabilities. The audio and face heads were trained on class-balanced draws, so their
probabilities assume equal classes; the text head regressed MOSI/MOSEI labels as they come, so its
probabilities carry those sets' lean to positive (MOSI valid: 73 negative, 47 neutral, 109
positive). The product is therefore a naive-Bayes fusion whose target prior is MOSI's. This script
divides the text head's prior out (a uniform target prior, like the other heads') and reports,
beside the shipped fusion:

* RAVDESS actors 17-20, Whisper text + audio, scored by the calibrated held-out twin (the card's
  multimodal check): valence_uar3 / valence_acc2;
* MOSI valid and the held-out MOSEI videos, text only, had the same division applied to the text
  head's own probabilities (with one modality the shipped model returns the head's score).

Needs the files ``make default-model`` and ``make default-model-eval`` leave in ``runs/default-model/eval``::

    .venv/bin/python examples/fusion_prior.py            # [--eval runs/default-model/eval] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch


def _metrics(y: np.ndarray, p: np.ndarray) -> str:
    from mmsa.training.metrics import regression_metrics

    m = regression_metrics(y, p)
    return f"MAE {m['mae']:.3f}, Acc-2 non0 {100 * m['acc2_non0']:.1f}"


def _text_prior(labels: Path) -> torch.Tensor:
    """Class frequencies (negative, neutral, positive) of MOSI valid: the text head's calibration set."""
    from mmsa.common.scale import polarity_index

    counts = torch.zeros(3, dtype=torch.float64)
    with labels.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["mode"] == "valid":
                counts[polarity_index(float(row["label"]))] += 1
    return counts / counts.sum()


def _divide(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    q = probs / prior
    return q / q.sum(-1, keepdim=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", type=Path, default=Path("runs/default-model/eval"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args(argv)
    need = [args.eval / n for n in ("twin.safetensors", "ravdess_asr.csv", "mosi_valid.csv", "mosei_valid_heldout.csv")]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        print(f"fusion_prior: missing {', '.join(missing)} (run make default-model and make default-model-eval)",
              file=sys.stderr)
        return 2

    from mmsa.model import load_checkpoint
    from mmsa.model.network import product_of_experts, score_probs, valence_score
    from mmsa.training.cache import featurize
    from mmsa.training.config import CacheConfig, SourceConfig
    from mmsa.training.data import read_source
    from mmsa.training.evaluate import predict
    from mmsa.training.metrics import valence_metrics

    prior = _text_prior(args.data / "mosi" / "label.csv")
    print("text head's prior (MOSI valid: negative, neutral, positive):", [round(float(x), 3) for x in prior])

    twin = load_checkpoint(str(args.eval / "twin.safetensors"), device="cpu")
    src = SourceConfig(reader="ravdess", labels=str(args.eval / "ravdess_asr.csv"), split="test",
                       root=str(args.data / "ravdess"), name="ravdess_asr_test")
    data = read_source(src, keep_unrated=True)
    preds = predict(twin.model, featurize(data, CacheConfig(), twin.features), twin.tokenizer, twin.features)
    probs = twin.model.polarity_probs({m: torch.tensor(v) for m, v in preds.unimodal.items()},
                                      {m: torch.tensor(v) for m, v in preds.logits.items()}).double()
    present = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).expand(len(data.records), 3)
    valences = [r.valence for r in data.records]

    def uar(scores) -> str:
        m = valence_metrics(valences, np.asarray(scores))
        return f"valence_uar3 {m['valence_uar3']:.3f}, valence_acc2 {100 * m['valence_acc2']:.1f}"

    uniform = probs.clone()
    uniform[:, 0] = _divide(probs[:, 0], prior)
    print(f"RAVDESS actors 17-20, Whisper text + audio (n={sum(v is not None for v in valences)}):")
    print("  audio alone                         ", uar(preds.unimodal["audio"]))
    print("  text alone                          ", uar(preds.unimodal["text"]))
    print("  fused, shipped (MOSI's prior)       ", uar(valence_score(product_of_experts(probs, present))))
    print("  fused, text prior divided (uniform) ", uar(valence_score(product_of_experts(uniform, present))))

    temperature = float(twin.model.cfg.calibration[0])
    for name in ("mosi_valid", "mosei_valid_heldout"):
        with (args.eval / f"{name}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        y = np.array([float(r["label"]) for r in rows])
        s = torch.tensor([float(r["pred_text"]) for r in rows], dtype=torch.float64)
        q = _divide(score_probs(s, temperature), prior)
        print(f"{name}, text only (n={len(rows)}):")
        print("  shipped (the head's score)          ", _metrics(y, s.numpy()))
        print("  text prior divided (uniform)        ", _metrics(y, valence_score(q).numpy()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

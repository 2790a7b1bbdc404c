"""How the calibrated fusion weighs its heads: six rules compared on RAVDESS speech with Whisper's transcripts,
chosen on actors 01-16 and then tested once on actors 17-20 (the model card's "Fusion").

The rules differ in two choices (``mmsa.model.network``): whether the text head's class prior is divided
out of its probabilities (``text_prior``; its labels lean positive, the voice and face heads were trained
class-balanced), and how the heads are weighed in the product: all fully (``product``), the words fully
and the voice by 1 - c (``voice gated``), or the words by their polarity confidence c = |P(positive) -
P(negative)| and the voice by 1 - c (``text gate``, ``fusion_gate = "text"``).

**Selection** (actors 01-16): every clip's voice is scored by a cross-validation fold model that never
heard its actor (``examples/audio_cv.py`` with the shipped recipe: ``--audio-loss 0``, folds 1-4; one
``--cv`` folder per seed), its transcript by the shipped model's text
head, both at the shipped temperatures. The rule with the best mean valence_uar3 over the seeds wins;
within 0.001, the better sign accuracy. **Test** (actors 17-20): the calibrated twin of
``make default-model-eval`` scores text + audio. The card's figures came from::

    .venv/bin/python examples/ravdess_asr.py ../shared/data/ravdess/labels.csv runs/ravdess_asr_1-16.csv \\
        --actors 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
    .venv/bin/python examples/fusion_rules.py --transcripts runs/ravdess_asr_1-16.csv \\
        --cv runs/audio-cv-windows runs/audio-cv-windows-s2 runs/audio-cv-windows-s3  # [--eval runs/default-model/eval]

(for the audio branch trained on the files only, shipped until ``default@446a52b3a1d9``, ``--cv`` took the fold runs
of that recipe, ``runs/audio-cv-12 ...``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

FOLDS = [list(range(a, a + 4)) for a in (1, 5, 9, 13)]
"""The folds of examples/audio_cv.py that hold out actors 01-16 (fold 5, actors 17-20, is the test)."""
RULES = ("product", "product, prior divided", "voice gated", "voice gated, prior divided",
         "text gate", "text gate, prior divided")


def fuse(rule: str, text: torch.Tensor, audio: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """(N, 3) calibrated text and audio probabilities -> (N,) fused score under one of :data:`RULES`."""
    from mmsa.model.network import divide_prior, fusion_weights, product_of_experts, valence_score

    if rule.endswith("prior divided"):
        text = divide_prior(text, prior)
    probs = torch.stack([text, audio], 1)
    present = torch.ones(len(text), 2, dtype=probs.dtype)
    if rule.startswith("product"):
        weights = present
    elif rule.startswith("text gate"):
        weights = fusion_weights(probs, present, "text")
    else:
        weights = fusion_weights(probs, present, "text")
        weights[:, 0] = 1.0
    return valence_score(product_of_experts(probs, weights))


def _probs(loaded, data, shipped) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Calibrated (N, 3 heads, 3) probabilities of ``loaded`` on ``data`` at the shipped temperatures, and
    each head's own score."""
    from mmsa.training.cache import featurize
    from mmsa.training.config import CacheConfig
    from mmsa.training.evaluate import predict

    model = loaded.model
    model.cfg = replace(model.cfg, fusion="calibrated", calibration=shipped.model.cfg.calibration)
    preds = predict(model, featurize(data, CacheConfig(), loaded.features), loaded.tokenizer, loaded.features)
    probs = model.polarity_probs({m: torch.tensor(v) for m, v in preds.unimodal.items()},
                                 {m: torch.tensor(v) for m, v in preds.logits.items()}).double()
    return probs, preds.unimodal


def _table(valences, text, audio, alone: dict[str, np.ndarray], prior) -> dict[str, tuple[float, float]]:
    """valence_uar3 and valence_acc2 (%) of each head alone (its own score) and of every rule."""
    from mmsa.training.metrics import valence_metrics

    scores = {f"{m} alone": s for m, s in alone.items()}
    scores.update({rule: fuse(rule, text, audio, prior).numpy() for rule in RULES})
    metrics = {rule: valence_metrics(valences, s) for rule, s in scores.items()}
    return {rule: (m["valence_uar3"], 100 * m["valence_acc2"]) for rule, m in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcripts", type=Path, required=True, help="examples/ravdess_asr.py's CSV of actors 01-16")
    ap.add_argument("--cv", type=Path, nargs="+", required=True, help="examples/audio_cv.py output folders, one per seed")
    ap.add_argument("--eval", type=Path, default=Path("runs/default-model/eval"), help="make default-model-eval's folder")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default="default", help="the model whose text head and temperatures are used")
    args = ap.parse_args(argv)
    need = [args.transcripts, args.eval / "twin.safetensors", args.eval / "ravdess_asr.csv"]
    need += [cv / f"audio0_fold{k}" / "model.safetensors" for cv in args.cv for k in range(1, len(FOLDS) + 1)]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        print(f"fusion_rules: missing {', '.join(missing)} (see this script's docstring)", file=sys.stderr)
        return 2

    from mmsa.model import load_checkpoint
    from mmsa.training.config import SourceConfig
    from mmsa.training.data import read_source

    shipped = load_checkpoint(args.model, device="cpu")
    prior = torch.tensor(shipped.model.cfg.text_prior or (1 / 3,) * 3, dtype=torch.float64)
    print(f"{shipped.info.tag}: temperatures {tuple(round(t, 3) for t in shipped.model.cfg.calibration)}, "
          f"text prior {tuple(round(float(p), 3) for p in prior)}")
    root = args.data / "ravdess"
    scores: list[dict[str, tuple[float, float]]] = []
    for cv in args.cv:
        text, audio, valences, alone = [], [], [], {"audio": [], "text": []}
        for k, held in enumerate(FOLDS, 1):
            data = read_source(SourceConfig(reader="ravdess", labels=str(args.transcripts), split="all", root=str(root),
                                            actors=tuple(held), name="ravdess_asr_selection"), keep_unrated=True)
            fold = load_checkpoint(str(cv / f"audio0_fold{k}" / "model.safetensors"), device="cpu")
            (pa, ua), (pt, ut) = _probs(fold, data, shipped), _probs(shipped, data, shipped)
            audio.append(pa[:, 1])
            text.append(pt[:, 0])
            alone["audio"].append(ua["audio"])
            alone["text"].append(ut["text"])
            valences += [r.valence for r in data.records]
        scores.append(_table(valences, torch.cat(text), torch.cat(audio),
                             {m: np.concatenate(v) for m, v in alone.items()}, prior))
    test_data = read_source(SourceConfig(reader="ravdess", labels=str(args.eval / "ravdess_asr.csv"), split="test",
                                         root=str(root), name="ravdess_asr_test"), keep_unrated=True)
    p, u = _probs(load_checkpoint(str(args.eval / "twin.safetensors"), device="cpu"), test_data, shipped)
    test = _table([r.valence for r in test_data.records], p[:, 0], p[:, 1], {m: u[m] for m in ("audio", "text")}, prior)

    mean = {r: tuple(float(np.mean([s[r][i] for s in scores])) for i in (0, 1)) for r in scores[0]}
    best = max(RULES, key=lambda r: (round(mean[r][0], 3), mean[r][1]))
    print(f"valence_uar3 / valence_acc2; selection: actors 01-16, {len(args.cv)} seeds ({', '.join(map(str, args.cv))}); "
          "test: actors 17-20, the twin")
    print(f"{'rule':28s} " + " ".join(f"{'seed ' + str(i + 1):>13s}" for i in range(len(scores))) + f" {'mean':>13s} {'test':>13s}")
    for rule in scores[0]:
        cells = [f"{s[rule][0]:.3f} / {s[rule][1]:4.1f}" for s in scores]
        mark = "  <- chosen" if rule == best else ""
        print(f"{rule:28s} " + " ".join(f"{c:>13s}" for c in cells)
              + f" {mean[rule][0]:.3f} / {mean[rule][1]:4.1f} {test[rule][0]:.3f} / {test[rule][1]:4.1f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

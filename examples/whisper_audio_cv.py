"""Audio valence from Whisper's encoder: actor-level cross-validation on RAVDESS speech (measured, not shipped).

The default model's audio branch is a TDNN trained from scratch on the log-STFT map of 1,040 RAVDESS
clips; on unseen actors it reaches valence_uar3 0.688 +- 0.063 (``examples/audio_cv.py``, two seeds x
five folds). This script measures the alternative the monitor already computes for every utterance:
the encoder of its Whisper (tiny.en, the packaged CTranslate2 int8 model), a speech model pretrained
on far more voices than RAVDESS has.

* **Features.** ``mmsa.model.speech.SpeechEncoder``, what a model with ``[model] audio_input =
  "whisper"`` reads: Whisper's log-mel frames of the whole clip, cut to the clip's own length (no
  30 s padding; the encoder takes any even number of frames, as the monitor's trimmed ASR does),
  through the encoder; the mean and the standard deviation of its 384-wide states over the clip's
  frames: 768 numbers per clip, cached in ``--out``.
* **Classifier.** Standardised with the training actors' mean and standard deviation, then ``linear``
  (one layer) or ``mlp`` (768 -> 128 -> 3, GELU, dropout 0.2 on the input and 0.3 after the hidden
  layer); class-weighted cross entropy with label smoothing 0.1 (the default model's), AdamW lr 1e-3,
  weight decay 1e-2, full batch. ``--epochs`` (200) and everything above were set before any fold was
  scored and are not tuned on them; the mean at 50 / 100 / 400 epochs is printed beside, to show how
  much the choice matters, not to choose. Standard deviations are over the runs (seeds x folds; ddof 1,
  as audio_cv.py's over folds).
* **Folds.** ``audio_cv.FOLDS``: five folds of four actors, every actor held out once; each fold
  trains on the other sixteen. Valence as everywhere (``mmsa.training.emotion``: happy positive; sad,
  angry, fearful, disgust negative; neutral, calm neutral; surprised left out), scored by
  ``training.metrics.valence_metrics`` (valence_uar3).

    .venv/bin/python examples/whisper_audio_cv.py --out runs/whisper-audio-cv --seeds 1 2 3
    .venv/bin/python examples/whisper_audio_cv.py --out runs/whisper-audio-cv --heads linear --stats mean   # | std

``--stats`` (an ablation of the input): the classifier reads only the mean or only the standard deviation.

About 2 minutes for the features (once) and a few seconds per fold on the 2-core machine. The result
and what shipping it would take are in docs/default-model.md ("Audio from Whisper's encoder").
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ravdess"
FOLDS = [list(range(a, a + 4)) for a in (1, 5, 9, 13, 17)]  # as examples/audio_cv.py
CLASSES = ("negative", "neutral", "positive")
SHOWN_EPOCHS = (50, 100, 400)
STATS = ("mean+std", "mean", "std")  # the features are [mean, std] of the encoder states (mmsa.model.speech)


def read_rows(labels: Path, actors: list[int] | None = None) -> list[dict]:
    """RAVDESS rows with a valence (surprised left out), of ``actors`` if given."""
    from mmsa.training.emotion import valence_of

    with labels.open() as fh:
        rows = [r for r in csv.DictReader(fh) if valence_of(r["emotion"])]
    return [r for r in rows if actors is None or int(r["actor"]) in actors]


def extract(rows: list[dict], data: Path, cache: Path | None, margin_s: float = 0.0) -> tuple[np.ndarray, float]:
    """(n, 768) features of ``rows`` (from ``cache`` where it holds them) and the encoder's ms per second of audio."""
    from mmsa.media import load_audio

    key = [r["path"] for r in rows]
    if cache is not None and cache.is_file():
        got = np.load(cache, allow_pickle=False)
        if list(got["paths"]) == key:
            return got["x"], float(got["ms_per_s"])
    from mmsa.model.speech import SpeechEncoder

    stats = SpeechEncoder(margin_s=margin_s)
    feats, spent, heard = [], 0.0, 0.0
    for r in rows:
        wave = load_audio(data / r["path"])
        t0 = time.perf_counter()
        feats.append(stats(wave))
        spent += time.perf_counter() - t0
        heard += wave.size / 16000
    x, ms_per_s = np.stack(feats), 1000 * spent / max(heard, 1e-9)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, paths=np.array(key), ms_per_s=ms_per_s)
    return x, ms_per_s


def train_and_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, head: str, seed: int,
                    epochs: list[int]) -> dict[int, np.ndarray]:
    """Train one classifier; its predicted classes on ``x_test`` after each of ``epochs``."""
    import torch
    from torch import nn

    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mean) / std, dtype=torch.float32)
    xv = torch.tensor((x_test - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y_train)
    torch.manual_seed(seed)
    d = xt.shape[1]
    if head == "linear":
        net: nn.Module = nn.Sequential(nn.Dropout(0.2), nn.Linear(d, len(CLASSES)))
    else:
        net = nn.Sequential(nn.Dropout(0.2), nn.Linear(d, 128), nn.GELU(), nn.Dropout(0.3), nn.Linear(128, len(CLASSES)))
    counts = np.bincount(y_train, minlength=len(CLASSES)).astype(np.float64)
    weight = torch.tensor(len(CLASSES) * (1 / counts) / (1 / counts).sum(), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    out = {}
    for epoch in range(1, max(epochs) + 1):
        net.train()
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt, weight=weight, label_smoothing=0.1).backward()
        opt.step()
        if epoch in epochs:
            net.eval()
            with torch.no_grad():
                out[epoch] = net(xv).argmax(1).numpy()
    return out


def cross_validate(x: np.ndarray, valences: list[str], actors: np.ndarray, head: str, seeds: list[int],
                   epochs: int, folds: list[list[int]] = FOLDS) -> dict:
    """valence_uar3 of every (seed, fold) at ``epochs`` and at SHOWN_EPOCHS; mean and std over the runs."""
    from mmsa.training.emotion import VALENCE_TARGET
    from mmsa.training.metrics import valence_metrics

    y = np.array([CLASSES.index(v) for v in valences])
    shown = sorted({epochs, *SHOWN_EPOCHS})
    runs: dict[int, list[float]] = {e: [] for e in shown}
    per_fold = []
    for seed in seeds:
        for held in folds:
            test = np.isin(actors, held)
            if not test.any() or test.all():
                continue
            preds = train_and_score(x[~test], y[~test], x[test], head, seed, shown)
            truth = [valences[i] for i in np.flatnonzero(test)]
            for e in shown:
                score = [VALENCE_TARGET[CLASSES[c]] for c in preds[e]]
                runs[e].append(valence_metrics(truth, score)["valence_uar3"])
            per_fold.append({"seed": seed, "held_out": held, "valence_uar3": round(runs[epochs][-1], 4)})
    return {"head": head, "epochs": epochs, "runs": per_fold,
            "mean": round(float(np.mean(runs[epochs])), 4), "std": round(float(np.std(runs[epochs], ddof=1)), 4),
            "mean_by_epochs": {e: round(float(np.mean(v)), 4) for e, v in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the RAVDESS folder (labels.csv and the clips)")
    ap.add_argument("--out", type=Path, default=Path("runs/whisper-audio-cv"), help="feature cache and results.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--heads", nargs="+", choices=("linear", "mlp"), default=["linear", "mlp"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--margin-s", type=float, default=0.0,
                    help="zero frames after each clip's content, in seconds (5: the encoder input of the monitor's "
                         "trimmed ASR, asr.trim_margin_s; 0: the clip alone)")
    ap.add_argument("--actors", type=int, nargs="+", help="only these actors (a quick look; default: all twenty)")
    ap.add_argument("--stats", choices=STATS, default="mean+std",
                    help="which statistics the classifier reads (an ablation; the shipped input: mean+std)")
    args = ap.parse_args(argv)
    labels = args.data / "labels.csv"
    if not labels.is_file():
        print(f"whisper_audio_cv: {labels}: no such file (RAVDESS labels)", file=sys.stderr)
        return 2
    rows = read_rows(labels, args.actors)
    from mmsa.training.emotion import valence_of

    suffix = ("" if args.actors is None else "-" + "_".join(map(str, sorted(args.actors)))) + (
        f"-margin{args.margin_s:g}" if args.margin_s else "")
    x, ms_per_s = extract(rows, args.data, args.out / f"features{suffix}.npz", args.margin_s)
    from mmsa.model.speech import STATE_DIM

    x = x[:, {"mean+std": slice(None), "mean": slice(0, STATE_DIM), "std": slice(STATE_DIM, None)}[args.stats]]
    suffix += "" if args.stats == "mean+std" else f"-{args.stats}"
    actors = np.array([int(r["actor"]) for r in rows])
    valences = [valence_of(r["emotion"]) for r in rows]
    folds = FOLDS if args.actors is None else [[a] for a in sorted(set(actors.tolist()))]
    print(f"{len(rows)} clips of {len(set(actors.tolist()))} actors; Whisper's encoder {ms_per_s:.1f} ms per second of audio; "
          f"the classifier reads {args.stats} ({x.shape[1]} numbers)")
    results = {"clips": len(rows), "encoder_ms_per_audio_s": round(ms_per_s, 2), "stats": args.stats, "heads": {}}
    for head in args.heads:
        res = cross_validate(x, valences, actors, head, args.seeds, args.epochs, folds)
        results["heads"][head] = res
        by_seed = {s: [r["valence_uar3"] for r in res["runs"] if r["seed"] == s] for s in args.seeds}
        for s, v in by_seed.items():
            print(f"{head:6s} seed {s}: " + " / ".join(f"{u:.3f}" for u in v) + f"  mean {np.mean(v):.3f}")
        print(f"{head:6s} valence_uar3 {res['mean']:.3f} +- {res['std']:.3f} over {len(res['runs'])} runs "
              f"({args.epochs} epochs; at " + ", ".join(f"{e}: {m:.3f}" for e, m in res["mean_by_epochs"].items()) + ")")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results{suffix}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

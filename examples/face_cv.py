"""Cross-validation of the default model's face recipe (stage 4) over FER2013's train split.

Stage 4 picks the epoch whose FER2013 valid figure is best, on 286 faces: within one run that figure
swings by two to four points from epoch to epoch, so the choice is mostly noise (docs/default-model.md,
"Why the trainer seemed to trail the standalone script"). Here every fold of ``--folds`` (a salted hash
of the row id, ``SourceConfig.fold``) of FER2013 *train* is held out once: the fold trains stage 4's
recipe on the other folds and scores the held-out one after every epoch (``select = "last"``). The
mean curve over the folds (about 2,000 faces in all) chooses the epoch count and the recipe; FER2013
valid and test stay untouched, so the final run's valid figure is a held-out figure, not a selected one.

    .venv/bin/python examples/face_cv.py --init runs/default-model/3_audio/model.safetensors \\
        --out runs/face-cv/A --jobs 2 --threads 1 --set train.epochs=20
    .venv/bin/python examples/face_cv.py --init runs/default-model/3_audio/model.safetensors \\
        --out runs/face-cv/E --jobs 2 --threads 1 --set train.epochs=20 --set train.ema=0.99

Every fold trains the recipe as the config has it, epochs included: stage 4 now trains the 7 epochs this
chose, so a scan of epoch counts names 20 again (``--set train.epochs=20``, as above); without it each
fold is the shipped recipe end to end, and the mean of the folds' last epochs compares whole recipes.

A recipe that trains several seeds and combines them (``[train] ensemble``, as stage 4 now does, or
``soup``) is cross-validated whole: each fold trains every seed on its four folds and scores the
combined model on the fifth (``<how>.json``); the summary gives it beside the mean of its seeds' last
epochs on the same fold, and the mean curve is that of the seeds.

``--set KEY=VALUE`` (repeatable) is an override of the recipe for every fold (give each variant its own
``--out``); a fold whose run folder already holds ``metrics.json`` is not trained again (rerun to print
the summary). ``--json`` writes the per-fold curves and the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_cv import curve, train_runs  # noqa: E402  (a sibling script: its runner and metrics reader)

from mmsa.training.config import load_config, to_toml, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STAGE4 = REPO / "configs" / "train" / "default" / "4_face.toml"


def fold_config(base: Path, k: int, folds: int, init: str, seed: int = 1, sets: list[str] | None = None) -> str:
    """Stage 4's config with fold k of FER2013 train held out: its FER2013 training source leaves the
    fold out; the only validation set is that fold (``fer_fold<k>``); the last epoch is kept."""
    cfg, _ = load_config(base, [*(sets or []), f"train.seed={seed}", f"train.init_from={json.dumps(init)}",
                                'train.select="last"'])
    fer = [s for s in cfg.data.train if s.reader == "fer2013"]
    if len(fer) != 1:
        raise SystemExit(f"face_cv: {base.name} has {len(fer)} FER2013 training sources; one is cross-validated")
    part = f"{k}/{folds}"
    train = tuple(replace(s, exclude_fold=part) if s.reader == "fer2013" else s for s in cfg.data.train)
    held = (replace(fer[0], name=f"fer_fold{k}", fold=part, balance=False),)
    return to_toml(validate(replace(cfg, data=replace(cfg.data, train=train, valid=held))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="the stage-3 checkpoint each fold starts from")
    ap.add_argument("--config", type=Path, default=STAGE4, help="the recipe (default: stage 4 of the default model)")
    ap.add_argument("--out", type=Path, default=Path("runs/face-cv"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1, help="train.seed of every run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an mmsa-train --set override for every fold (a variant of the recipe; give each its own --out)")
    ap.add_argument("--json", type=Path, help="write the per-fold curves and the summary here")
    args = ap.parse_args(argv)
    if not Path(args.init).is_file():
        print(f"face_cv: {args.init}: no such checkpoint (run make default-model first)", file=sys.stderr)
        return 2
    if args.folds < 2:
        print(f"face_cv: --folds {args.folds}: need at least 2", file=sys.stderr)
        return 2
    runs = []
    for k in range(1, args.folds + 1):
        run = args.out / f"fold{k}"
        run.mkdir(parents=True, exist_ok=True)
        (run.parent / f"{run.name}.toml").write_text(
            fold_config(args.config, k, args.folds, str(Path(args.init).resolve()), args.seed, args.set))
        runs.append(run)
    failed = train_runs(runs, args.jobs, args.threads, [])
    if failed:
        print(f"face_cv: training failed for {', '.join(failed)} (see their .log files in {args.out})", file=sys.stderr)
        return 1
    recipe, _ = load_config(runs[0].parent / f"{runs[0].name}.toml")
    how = "ensemble" if recipe.train.ensemble else "soup" if recipe.train.soup else ""
    seeds = list(recipe.train.ensemble or recipe.train.soup)
    # per fold: the run's curve, or with several seeds the mean of the seeds' curves
    per_seed = [[curve(run / f"seed{s}", f"fer_fold{k}") for s in seeds] if how else [curve(run, f"fer_fold{k}")]
                for k, run in enumerate(runs, 1)]
    curves = np.array([np.mean(c, 0) for c in per_seed])
    mean, last = curves.mean(0), curves[:, -1]
    best = int(mean.argmax())
    summary = {"folds": args.folds, "seed": seeds or args.seed, "set": args.set, "curves": curves.round(4).tolist(),
               "mean_curve": mean.round(4).tolist(), "best_epoch": best + 1, "best_mean": round(float(mean[best]), 4),
               "last_mean": round(float(last.mean()), 4), "last_std": round(float(last.std(ddof=1)), 4)}
    label = f"the mean of seeds {seeds}' " if how else ""
    print(f"{args.out}: {label}last epoch " + " ".join(f"fold{k} {v:.3f}" for k, v in enumerate(last, 1))
          + f" | mean {last.mean():.3f} +- {last.std(ddof=1):.3f}")
    print(f"  mean curve: best {mean[best]:.3f} at epoch {best + 1}; by epoch: " + " ".join(f"{v:.3f}" for v in mean))
    if how:
        combined = np.array([json.loads((run / f"{how}.json").read_text())["valid"][f"fer_fold{k}"]["valence_uar3"]
                             for k, run in enumerate(runs, 1)])
        gain = combined - last
        print(f"  the {how}: " + " ".join(f"fold{k} {v:.3f}" for k, v in enumerate(combined, 1))
              + f" | mean {combined.mean():.3f} +- {combined.std(ddof=1):.3f}; over its seeds' mean {gain.mean():+.3f}"
              f" (higher on {int((gain >= 0).sum())} of {len(gain)} folds)")
        summary |= {how: combined.round(4).tolist(), f"{how}_mean": round(float(combined.mean()), 4),
                    f"{how}_std": round(float(combined.std(ddof=1)), 4), "gain_mean": round(float(gain.mean()), 4)}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

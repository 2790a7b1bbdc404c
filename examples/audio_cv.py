"""Actor-level cross-validation of the default model's audio recipe: five folds of four RAVDESS actors.

Each fold trains the recipe of ``configs/train/default/heldout/3_audio_actors_1-16.toml`` (the held-out
twin of stage 3) on sixteen actors, from a stage-2 checkpoint, and reports valence_uar3 on the other
four after every epoch (``select = "last"``: the last epoch is the fold's figure; the mean curve over
the folds shows where more or fewer epochs would land). ``--audio-loss`` gives the L_audio (InfoNCE)
weights to compare; every run uses ``--threads`` torch threads and ``--jobs`` runs at once. The model
card's table (docs/default-model.md, "The paper's alignment losses") came from::

    .venv/bin/python examples/audio_cv.py --init runs/default-model/2_text/model.safetensors \\
        --out runs/audio-cv --audio-loss 1 0 --jobs 2 --threads 1

``--set KEY=VALUE`` (repeatable) passes an override of the recipe to every run, e.g. ``--set
train.epochs=12``; give each variant its own ``--out``. The recipe of Whisper's encoder statistics
(``[model] audio_input = "whisper"``, shipped) came from::

    .venv/bin/python examples/audio_cv.py --init runs/default-model/2_text/model.safetensors \
        --out runs/audio-cv-12 --audio-loss 0 1 --threads 1 --set train.epochs=12 [--seed 2|3]

The twin trains on its actors' files and on the windows the monitor's segmenter cuts of them
(``runs/default-model/ravdess_windows``, written by ``make default-model``; elsewhere: ``--set
data.train.1.labels=DIR/labels.csv --set data.valid.1.labels=DIR/labels.csv``), and each fold reports
its held-out actors both ways; the recipe of files and windows (shipped) came from::

    .venv/bin/python examples/audio_cv.py --init runs/default-model/2_text/model.safetensors \
        --out runs/audio-cv-windows --audio-loss 0 --jobs 2 --threads 1 [--seed 2|3]

A fold whose run folder already holds ``metrics.json`` is not trained again (rerun to print the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "configs" / "train" / "default" / "heldout" / "3_audio_actors_1-16.toml"
FOLDS = [list(range(a, a + 4)) for a in (1, 5, 9, 13, 17)]
TRAIN_LINE = re.compile(r"^actors = \[[0-9, ]+\].*$", re.M)
VALID_LINE = re.compile(r'^(split = "test").*$', re.M)
LOSS_LINE = re.compile(r"^audio = [0-9.]+.*$", re.M)
SEED_LINE = re.compile(r"^seed = [0-9]+.*$", re.M)


def fold_config(twin: str, held: list[int], audio_loss: float, init: str, seed: int = 1) -> str:
    """The twin's config with another four actors held out, the given L_audio weight, seed and init checkpoint."""
    train = [a for a in range(1, 21) if a not in held]
    text, n1 = TRAIN_LINE.subn(f"actors = {train}", twin)  # every train source (the files, the windows)
    text, n2 = VALID_LINE.subn(rf"\1\nactors = {held}", text)  # every test source
    text, n3 = LOSS_LINE.subn(f"audio = {audio_loss}", text)
    text, n4 = SEED_LINE.subn(f"seed = {seed}", text)
    if not (n1 >= 1 and n2 >= 1 and (n3, n4) == (1, 1)):
        raise SystemExit(f"audio_cv: {TWIN.name} no longer has train actors lines, a valid test split, one audio loss and one seed")
    return re.sub(r'^init_from = ".*"$', f'init_from = "{init}"', text, flags=re.M)


HELD_OUT = {"ravdess_test": "files", "ravdess_windows_test": "windows"}  # the twin's valid sources: the held-out actors'
# files, and the windows the monitor's segmenter cuts of them


def curve(run: Path, key: str = "ravdess_test") -> list[float]:
    history = json.loads((run / "metrics.json").read_text())["history"]
    return [e["valid"][key]["valence_uar3"] for e in history if key in e["valid"]]


def train_runs(runs: list[Path], jobs: int, threads: int, sets: list[str]) -> list[str]:
    """Train each run folder from the config beside it (``<run>.toml``; log ``<run>.log``), ``jobs`` at once on
    ``threads`` torch threads each, with the ``--set`` overrides; a folder that holds ``metrics.json`` (or,
    for a soup or an ensemble of seeds, ``soup.json`` / ``ensemble.json``) is skipped. Returns the names of
    the runs that failed."""

    def train(run: Path) -> int:
        if any((run / done).is_file() for done in ("metrics.json", "soup.json", "ensemble.json")):
            return 0
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with (run.parent / f"{run.name}.log").open("w") as log:
            cmd = [sys.executable, "-c", "import sys; from mmsa.training.cli import train_main; sys.exit(train_main())",
                   str(run.parent / f"{run.name}.toml"), "--out", str(run), *(a for kv in sets for a in ("--set", kv))]
            return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    with ThreadPoolExecutor(jobs) as pool:
        return [run.name for run, rc in zip(runs, pool.map(train, runs)) if rc != 0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="the stage-2 checkpoint each fold starts from")
    ap.add_argument("--out", type=Path, default=Path("runs/audio-cv"))
    ap.add_argument("--audio-loss", type=float, nargs="+", default=[0.0, 1.0], help="L_audio weights to compare")
    ap.add_argument("--seed", type=int, default=1, help="train.seed of every run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an mmsa-train --set override for every run (a variant of the recipe; give each variant its own --out)")
    args = ap.parse_args(argv)
    if not Path(args.init).is_file():
        print(f"audio_cv: {args.init}: no such checkpoint (run make default-model first)", file=sys.stderr)
        return 2
    twin = TWIN.read_text()
    runs: list[tuple[float, int, Path]] = []
    for loss in args.audio_loss:
        for k, held in enumerate(FOLDS, 1):
            run = args.out / f"audio{loss:g}_fold{k}"
            run.mkdir(parents=True, exist_ok=True)
            (run.parent / f"{run.name}.toml").write_text(fold_config(twin, held, loss, str(Path(args.init).resolve()), args.seed))
            runs.append((loss, k, run))

    failed = train_runs([run for _, _, run in runs], args.jobs, args.threads, args.set)
    if failed:
        print(f"audio_cv: training failed for {', '.join(failed)} (see their .log files in {args.out})", file=sys.stderr)
        return 1
    for loss in args.audio_loss:
        per_key = {key: np.array([curve(run, key) for weight, _, run in runs if weight == loss]) for key in HELD_OUT}
        for key, curves in per_key.items():
            if curves.size:
                last = curves[:, -1]
                print(f"L_audio {loss:g}, {HELD_OUT[key]}: " + " ".join(f"fold{k} {v:.3f}" for k, v in enumerate(last, 1))
                      + f" | mean {last.mean():.3f} +- {last.std(ddof=1):.3f}")
        mean = per_key["ravdess_test"].mean(0)  # the curve over epochs, on the held-out files
        marks = sorted({e for e in (10, 20, 30) if e < len(mean)} | {len(mean)})
        print(f"  mean curve: best {mean.max():.3f} at epoch {int(mean.argmax()) + 1}; at epochs {'/'.join(map(str, marks))}: "
              + " / ".join(f"{mean[e - 1]:.3f}" for e in marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())

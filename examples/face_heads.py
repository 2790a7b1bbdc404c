"""The face branch's head on FER2013, trained standalone over the frozen face-mesh trunk: how the
mirror pass is combined at evaluation, and whether jittering the trunk's input in training helps (the
model card's "Each branch", face).

The trunk's outputs (the 1,152 last features and the 12x12x128 map) of every FER2013 face with a
valence (``surprise`` left out; the trainer's hash split) and of its mirror (the mirror's map flipped
back) are computed once, and with ``--jitter K`` also of K randomly jittered copies of every training
face (rotation, zoom, shift, brightness, contrast of the whole crop before the trunk). The shipped
head design (``encoders.ImageEncoder`` with ``cnn_input = "mesh"`` and the 3-class head) then trains
as stage 4 does: 20 epochs, AdamW lr 2e-3, weight decay 1e-4, 10 % warm-up then cosine, batch 64,
class-balanced draws, label smoothing 0.1, random 1-cell shifts of the map; each step sees every face
in one orientation at random (and, with jitter, one of its copies). Each evaluation mode picks its own
epoch on FER2013 valid and reports valence_uar3 on valid and test:

* ``features``: the two orientations' trunk outputs averaged, one head pass (what the model does);
* ``logits``: one head pass per orientation, the logits averaged;
* ``one``: the face as given, no mirror pass.

With ``--expression`` the frozen FER2013 expression network (``mmsa.model.expression``, the shipped
branch's second network) also sees every face and its mirror, and its features join through the
encoder's own projection, as in the shipped stage 4. The trunk's outputs are kept as float16 (as every
earlier figure of this script); ``--float32`` keeps them as computed, as the trainer does. The two give
different figures for the same seed (the runs are chaotic: the model card's "Why the trainer seemed to
trail the standalone script").

Run (about 2 minutes per seed on 2 cores, plus about 30 s for the trunk per jittered copy)::

    .venv/bin/python examples/face_heads.py --seeds 1 2 3              # [--jitter 8] [--expression] [--float32]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mmsa.model.encoders import ImageEncoder, MeshFeatures
from mmsa.model.expression import MiniXception
from mmsa.model.facemesh import FEATURES, MAP, FaceMesh
from mmsa.model.network import _head
from mmsa.training.data import hash_split
from mmsa.training.emotion import valence_of

CLASSES = {"negative": 0, "neutral": 1, "positive": 2}
MODES = ("features", "logits", "one")
JITTER = {"rotate": 10.0, "scale": 0.1, "shift": 0.06, "brightness": 0.1, "contrast": 0.2}
"""Jitter strengths: degrees, zoom factor +-, shift as a fraction of the side, brightness +-, contrast +-."""


def load_faces(root: Path, limit: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``labels.csv`` of a FER2013 folder -> per split, (N, 1, 48, 48) crops in [0, 1] and (N,) classes."""
    rows: dict[str, list[tuple[torch.Tensor, int]]] = {"train": [], "valid": [], "test": []}
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            valence = valence_of(r["emotion"])
            split = hash_split(r["path"].strip())
            if valence is None or (limit and len(rows[split]) >= limit):
                continue
            img = cv2.imread(str(root / r["path"].strip()), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError(f"{root / r['path']}: not an image")
            t = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
            if t.shape[-2:] != (48, 48):
                t = F.interpolate(t, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
            rows[split].append((t[0], CLASSES[valence]))
    return {k: (torch.stack([t for t, _ in v]), torch.tensor([c for _, c in v])) for k, v in rows.items()}


def jitter(faces: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(N, 1, S, S) -> randomly rotated, zoomed, shifted (borders replicated), brightened and contrasted."""
    n = len(faces)

    def uniform(x: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * x

    ang, zoom = uniform(JITTER["rotate"] * math.pi / 180), 1 + uniform(JITTER["scale"])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / zoom, -torch.sin(ang) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / zoom, torch.cos(ang) / zoom
    theta[:, 0, 2], theta[:, 1, 2] = uniform(2 * JITTER["shift"]), uniform(2 * JITTER["shift"])
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    out = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean((2, 3), keepdim=True)
    contrast = (1 + uniform(JITTER["contrast"])).view(n, 1, 1, 1)
    return ((out - mean) * contrast + mean + uniform(JITTER["brightness"]).view(n, 1, 1, 1)).clamp(0.0, 1.0)


def trunk(mesh: FaceMesh, faces: torch.Tensor, half: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, S, S) -> features (N, 2, 1152) and maps (N, 2, 128, 12, 12), float16 (``half``) or float32;
    index 1 of the second axis is the mirror (its map flipped back)."""
    n = len(faces)
    out = mesh.outputs(torch.cat([faces, torch.flip(faces, dims=[3])]))
    vec = torch.stack([out[FEATURES][:n], out[FEATURES][n:]], 1)
    fmap = torch.stack([out[MAP][:n], torch.flip(out[MAP][n:], dims=[3])], 1)
    return (vec.half(), fmap.half()) if half else (vec, fmap)


def expression_features(net: MiniXception, faces: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) -> the expression network's features (N, 2, 135) of each face and its mirror, float32."""
    with torch.no_grad():
        e = net.features(torch.cat([faces, torch.flip(faces, dims=[3])]))
    return torch.stack([e[: len(faces)], e[len(faces):]], 1)


def uar(pred: torch.Tensor, y: torch.Tensor) -> float:
    """valence_uar3: the mean of the per-class recalls (classes present)."""
    return float(np.mean([(pred[y == c] == c).float().mean() for c in range(3) if (y == c).any()]))


def train_head(vec: torch.Tensor, fmap: torch.Tensor, y: torch.Tensor,
               evals: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]],
               seed: int, epochs: int = 20, expr: torch.Tensor | None = None) -> dict[str, tuple[float, float, int]]:
    """Train on ``vec`` (N, V, 2, D) / ``fmap`` (N, V, 2, C, H, W) / ``expr`` (N, V, 2, E) or None: V copies
    of each face, 2 orientations. -> per mode, (valid, test, epoch) at the epoch with the best valid."""
    torch.manual_seed(seed)
    enc = ImageEncoder((16, 32), 2, 16, 128, face_mesh=True, cnn_input="mesh", expression_net=expr is not None)
    enc.mesh = enc.expression = None  # the frozen networks' outputs are given
    head = _head(128, 128, 0.1, 3)
    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    n, copies, bs = vec.shape[0], vec.shape[1], 64
    weights = (1 / torch.bincount(y, minlength=3).float())[y]
    steps = epochs * math.ceil(n / bs)
    warm = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    none = torch.zeros(1)  # no pixels: the CNN reads the trunk's map
    best: dict[str, tuple[float, float, int]] = {}
    for epoch in range(1, epochs + 1):
        enc.train(), head.train()
        order = torch.multinomial(weights, n, replacement=True)
        for i in range(0, n, bs):
            b = order[i : i + bs]
            if len(b) < 2:
                continue
            copy, side = torch.randint(0, copies, (len(b),)), torch.randint(0, 2, (len(b),))
            e = None if expr is None else expr[b, copy, side]
            logits = head(enc(none, MeshFeatures(vec[b, copy, side].float(), fmap[b, copy, side].float(), e), True))
            loss = F.cross_entropy(logits, y[b], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        enc.eval(), head.eval()
        scores: dict[str, dict[str, float]] = {m: {} for m in MODES}
        with torch.no_grad():
            for split, (v, m, ex, yy) in evals.items():
                def logits_of(vv: torch.Tensor, mm: torch.Tensor, ee: torch.Tensor | None) -> torch.Tensor:
                    return head(enc(none, MeshFeatures(vv.float(), mm.float(), ee)))
                own = logits_of(v[:, 0], m[:, 0], None if ex is None else ex[:, 0])
                mirror = logits_of(v[:, 1], m[:, 1], None if ex is None else ex[:, 1])
                both = logits_of(v.float().mean(1), m.float().mean(1), None if ex is None else ex.mean(1))
                scores["features"][split] = uar(both.argmax(1), yy)
                scores["logits"][split] = uar((own + mirror).argmax(1), yy)
                scores["one"][split] = uar(own.argmax(1), yy)
        for mode, s in scores.items():
            if s["valid"] > best.get(mode, (-1.0, 0.0, 0))[0]:
                best[mode] = (s["valid"], s["test"], epoch)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="folder with fer2013/ (default: ../shared/data)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--jitter", type=int, default=0, help="jittered copies of each training face (default 0)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--expression", action="store_true", help="add the frozen expression network's features")
    p.add_argument("--float32", action="store_true", help="keep the trunk's outputs as float32 (default float16)")
    p.add_argument("--limit", type=int, default=0, help="at most this many faces per split (tests)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    root = Path(args.data) / "fer2013"
    if not (root / "labels.csv").is_file():
        print(f"face_heads: missing {root / 'labels.csv'}", file=sys.stderr)
        return 2
    faces = load_faces(root, args.limit)
    mesh = FaceMesh(outputs=(FEATURES, MAP)).eval()
    gen = torch.Generator().manual_seed(0)
    half = not args.float32
    expr_net = MiniXception().eval() if args.expression else None
    train_faces = [faces["train"][0]] + [jitter(faces["train"][0], gen) for _ in range(args.jitter)]
    out = {split: trunk(mesh, x, half) for split, (x, _) in faces.items() if split != "train"}
    copies = [trunk(mesh, x, half) for x in train_faces]
    vec, fmap = torch.stack([c[0] for c in copies], 1), torch.stack([c[1] for c in copies], 1)
    expr = None if expr_net is None else torch.stack([expression_features(expr_net, x) for x in train_faces], 1)
    evals = {s: (*out[s], None if expr_net is None else expression_features(expr_net, faces[s][0]), faces[s][1])
             for s in ("valid", "test")}
    runs = {}
    for seed in args.seeds:
        runs[seed] = train_head(vec, fmap, faces["train"][1], evals, seed, args.epochs, expr)
        for mode, (valid, test, epoch) in runs[seed].items():
            print(f"jitter {args.jitter} seed {seed} {mode:8s}: valid {valid:.3f} test {test:.3f} (epoch {epoch})")
    summary = {}
    for mode in MODES:
        v, t = (np.array([r[mode][i] for r in runs.values()]) for i in (0, 1))
        summary[mode] = {"valid": [float(v.mean()), float(v.std())], "test": [float(t.mean()), float(t.std())]}
        print(f"jitter {args.jitter} {mode:8s}: valid {v.mean():.3f} +- {v.std():.3f}  test {t.mean():.3f} +- {t.std():.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"jitter": args.jitter, "expression": args.expression,
                                               "float32": args.float32, "seeds": args.seeds, "n": {
            s: len(faces[s][1]) for s in faces}, "modes": summary, "runs": {str(k): v for k, v in runs.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the face branch's training steps (stage 4 of the default model) with the frozen face networks'
outputs computed every step (before) and remembered per crop (now: ``ImageEncoder.remember``, which
the trainer sets up).

    python bench/face_training.py [--faces 256] [--batch 64] [--epochs 2]

Stage 4's model and parts (``configs/train/default/4_face.toml``: only the vision branch trains, the
Face Mesh trunk and the expression network frozen) on a pool of FER2013-sized crops (48x48 gray,
random pixels: the time does not depend on them), one face per row as FER2013's. Each variant runs
``--epochs`` passes over the pool in batches; with the memo the first pass fills it. Prints seconds per
step of each pass and the ratio of the later passes; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mmsa.model import LossConfig, MMSAModel, Sample, collate, joint_loss, resolve_bert
from mmsa.training.config import load_config
from mmsa.training.optim import freeze, train_mode

CONFIG = Path(__file__).resolve().parents[1] / "configs/train/default/4_face.toml"


def run(memo: bool, faces: torch.Tensor, batch: int, epochs: int, tokenizer) -> list[float]:
    """Seconds per step of each pass over ``faces`` (one variant, a fresh model)."""
    cfg, _ = load_config(CONFIG, ["train.init_from=\"\""])
    torch.manual_seed(0)
    model = MMSAModel.build(cfg.model, resolve_bert(cfg.model.bert))
    _, eval_modules = freeze(model, cfg.train)
    if memo:
        model.for_training(cfg.augment)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    loss_cfg = LossConfig(fused=0.0, unimodal=1.0, label_smoothing=0.1, text=0.0, audio=0.0, vision=0.0)
    labels = (torch.arange(len(faces)) % 3 - 1).float() * 2  # negative / neutral / positive
    batches = [
        (collate([Sample(faces=f[None]) for f in faces[i : i + batch]], tokenizer), labels[i : i + batch])
        for i in range(0, len(faces), batch)
    ]
    per_pass = []
    for _ in range(epochs):
        train_mode(model, eval_modules)
        t = time.perf_counter()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            joint_loss(model(x, views=()), y, loss_cfg).total.backward()
            opt.step()
        per_pass.append((time.perf_counter() - t) / len(batches))
    return per_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=256, help="crops in the pool (default 256)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="passes over the pool per variant (default 2)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_bert())
    faces = torch.rand(args.faces, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    before = run(False, faces, args.batch, args.epochs, tokenizer)
    now = run(True, faces, args.batch, args.epochs, tokenizer)
    later_before, later_now = statistics.mean(before[1:] or before), statistics.mean(now[1:] or now)
    print(f"stage 4 training step, batch {args.batch}, {args.faces} faces, {torch.get_num_threads()} CPU threads")
    print(f"{'pass':>4}  {'computed every step (s/step)':>28}  {'remembered (s/step)':>19}")
    for i, (b, n) in enumerate(zip(before, now), 1):
        print(f"{i:>4}  {b:>28.3f}  {n:>19.3f}")
    print(f"later passes: {later_before / later_now:.2f}x faster with the memo")
    if args.json:
        Path(args.json).write_text(json.dumps({"before_s_per_step": before, "memo_s_per_step": now,
                                               "speedup_later": later_before / later_now}, indent=2))


if __name__ == "__main__":
    main()

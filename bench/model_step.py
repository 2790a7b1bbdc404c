"""Time one training step and one inference step of the full model (packaged MiniLM, all three
modalities present) at batch 1 and 48 on the CPU (and CUDA when present; there also a training step
with bfloat16 autocast, as the trainer's ``train.amp`` runs it).

    python bench/model_step.py [--batch 1 48] [--repeat 3] [--device cpu]

Prints a table of median seconds per step; nothing is asserted. Inputs are 5 s of audio,
8 face crops and a 20-word sentence per row (a typical MOSI utterance).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from mmsa.model import LossConfig, MMSAModel, ModelConfig, Sample, collate, joint_loss, resolve_bert
from mmsa.model.features import audio_features


def make_batch(tokenizer, n: int, rng: np.random.Generator):
    words = "this movie was honestly one of the better ones i have seen this year and i would watch it again".split()
    samples = [
        Sample(
            text=" ".join(words),
            audio=audio_features(rng.standard_normal(16000 * 5).astype(np.float32) * 0.1),
            faces=torch.rand(8, 1, 48, 48),
        )
        for _ in range(n)
    ]
    return collate(samples, tokenizer)


def timed(fn, repeat: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 48])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bert = resolve_bert()
    tokenizer = AutoTokenizer.from_pretrained(bert)
    model = MMSAModel.build(ModelConfig(), bert).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    amp = dev.type == "cuda"  # the trainer's train.amp: bfloat16 autocast on CUDA
    rows = []
    for n in args.batch:
        batch = make_batch(tokenizer, n, rng).to(dev)
        labels = torch.zeros(n, device=dev)

        def train_step(batch=batch, labels=labels, amp=False):
            model.train()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = model(batch, text_views=True)
                loss = joint_loss(out, labels, LossConfig()).total
            loss.backward()
            opt.step()

        def infer_step(batch=batch):
            model.eval()
            with torch.inference_mode():
                model(batch)

        rows.append({"batch": n, "train_step_s": timed(train_step, args.repeat, sync),
                     "train_step_amp_s": timed(lambda: train_step(amp=True), args.repeat, sync) if amp else None,
                     "infer_step_s": timed(infer_step, args.repeat, sync)})
    threads = torch.get_num_threads()
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{threads} CPU threads'})")
    print(f"{'batch':>5}  {'train step (s)':>14}  {'with AMP (s)':>12}  {'inference step (s)':>18}  {'inference ms/row':>16}")
    for r in rows:
        amp_s = "" if r["train_step_amp_s"] is None else f"{r['train_step_amp_s']:.3f}"
        print(f"{r['batch']:>5}  {r['train_step_s']:>14.3f}  {amp_s:>12}  {r['infer_step_s']:>18.3f}  "
              f"{1000 * r['infer_step_s'] / r['batch']:>16.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(dev), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()

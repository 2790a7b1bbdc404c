"""The model on CUDA: the same scores as on the CPU, and training there (AMP, the GradScaler, pinned
batches) that learns and writes a checkpoint the CPU loads. The CUDA tests skip where torch sees no CUDA
device (CI), which runs the training test under CPU autocast instead; ``bash bench/gpu.sh`` runs them on
a GPU machine (docs/performance.md, "CUDA")."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmsa.model import MMSAModel, load_checkpoint
from mmsa.training.cli import train_main
from tests.model.helpers import batch, random_sample, seeded, tiny_config
from tests.training.conftest import write_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch sees no CUDA device here")
CUDA = [pytest.mark.gpu, needs_cuda]

REPO = Path(__file__).resolve().parents[2]
SESSION = REPO / "examples" / "sample-session"
# TF32 convolutions (cuDNN's default on Ampere and later) and another summation order: the CPU and the
# GPU agree to about 1e-3 on the -3..3 scale; this bound is ten times that.
ATOL = 1e-2


@pytest.mark.gpu
@needs_cuda
def test_tiny_model_scores_the_same_on_cuda_as_on_the_cpu(tiny_bert, tokenizer):
    rng = seeded(0)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert).eval()
    samples = [random_sample(rng), random_sample(rng, text=None), random_sample(rng, seconds=0),
               random_sample(rng, n_faces=0, text="not bad at all")]
    inputs = batch(tokenizer, samples)
    with torch.inference_mode():
        cpu = model(inputs)
        gpu = model.to("cuda")(inputs.to("cuda"))
    torch.testing.assert_close(gpu.score.cpu(), cpu.score, atol=ATOL, rtol=0)
    for m, scores in cpu.unimodal.items():
        torch.testing.assert_close(gpu.unimodal[m].cpu(), scores, atol=ATOL, rtol=0, equal_nan=True)


def session_samples():
    """The sample session's utterances (real video frames and words; no audio: Whisper's encoder, the
    default model's audio input, runs on the CPU in CTranslate2) as the monitor featurizes them."""
    from mmsa.media import FaceDetector, read_frames
    from mmsa.media.clip import window_sample

    frames = list(read_frames(SESSION / "session.mp4"))
    det = FaceDetector()
    out = []
    for u in json.loads((SESSION / "script.json").read_text()):
        window = [f for t, f in frames if u["t_start"] <= t < u["t_end"]]
        out.append(window_sample(None, window, u["text"], det))
    return out


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV 5 has no Haar face detector (the project pins 4.x)")
def test_default_model_scores_the_sample_session_the_same_on_cuda():
    from mmsa.monitor.scorer import Scorer

    loaded = load_checkpoint("default")
    samples = session_samples()
    assert sum(s.faces is not None for s in samples) >= len(samples) // 2
    cpu = Scorer(loaded, device="cpu", runtime="torch").score(samples)
    gpu = Scorer(load_checkpoint("default"), device="cuda", runtime="onnx")
    assert gpu.runtime == "torch"  # the ONNX runtime is for the CPU
    got = gpu.score(samples)
    for a, b in zip(cpu, got, strict=True):
        assert b.score == pytest.approx(a.score, abs=ATOL)
        for m, v in a.unimodal.items():
            assert (v is None) == (b.unimodal[m] is None)
            if v is not None:
                assert b.unimodal[m] == pytest.approx(v, abs=ATOL)


def fer_like(root: Path, n: int = 80) -> Path:
    """FER2013-style crops: 'happy' bright above, 'sad' bright below, something the face branch can learn."""
    rng = np.random.default_rng(1)
    rows = ["path,emotion,fer2013_usage"]
    for i in range(n):
        emotion = ("happy", "sad")[i % 2]
        img = rng.integers(0, 80, (48, 48), dtype=np.uint8)
        img[:24] += 150 if emotion == "happy" else 0
        img[24:] += 150 if emotion == "sad" else 0
        rel = f"Training/{emotion}/img_{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
        rows.append(f"{rel},{emotion},Training")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA), "cpu-autocast"])
def test_training_with_amp_learns_and_the_cpu_loads_it(tiny_bert, tmp_path, monkeypatch, device):
    """``cuda``: the trainer's mixed precision as it runs (bfloat16 autocast, the GradScaler, pinned
    batches). ``cpu-autocast``: the same steps under CPU bfloat16 autocast, so that CI, which has no GPU,
    catches what autocast breaks (the trainer asks for autocast only on CUDA; here it gets the CPU's)."""
    if device == "cpu-autocast":
        import mmsa.training.evaluate as evaluate
        import mmsa.training.trainer as trainer

        def cpu_autocast(dev, enabled):
            return torch.autocast("cpu", dtype=torch.bfloat16)

        monkeypatch.setattr(trainer, "autocast", cpu_autocast)
        monkeypatch.setattr(evaluate, "autocast", cpu_autocast)
    vader = tmp_path / "vader"
    vader.mkdir()
    good, bad = ["great", "lovely", "wonderful", "happy"], ["awful", "terrible", "horrible", "sad"]
    lines = [f"{i}\t{3.0 if i % 2 else -3.0}\tit was {(good if i % 2 else bad)[i % 4]} really" for i in range(1, 81)]
    (vader / "probe_GroundTruth.txt").write_text("\n".join(lines) + "\n")
    faces = fer_like(tmp_path / "fer")
    cfg = write_config(
        tmp_path / "cuda.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "text", "reader": "vader", "labels": str(vader), "split": "all"},
                 {"name": "faces", "reader": "fer2013", "labels": str(faces), "split": "train"}],
        valid=[{"name": "faces_valid", "reader": "fer2013", "labels": str(faces), "split": "valid"}],
        train={"epochs": 4, "batch_size": 8, "device": device.removesuffix("-autocast"), "amp": True},
    )
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [h["train_loss"]["total"] for h in metrics["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # the checkpoint written on the GPU loads on the CPU and scores as it does on the GPU
    loaded = load_checkpoint(run / "model.safetensors", device="cpu")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.model.parameters())
    if device == "cuda":
        rng = seeded(2)
        inputs = batch(loaded.tokenizer, [random_sample(rng), random_sample(rng, text="it was awful really")])
        with torch.inference_mode():
            cpu = loaded.model.eval()(inputs).score
            gpu = loaded.model.to("cuda")(inputs.to("cuda")).score.cpu()
        torch.testing.assert_close(gpu, cpu, atol=ATOL, rtol=0)

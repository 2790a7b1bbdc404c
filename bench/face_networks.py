"""What each frozen face network costs in ONNX Runtime: the Face Mesh trunk and the expression network.

    python bench/face_networks.py [--crops 8] [--threads 2] [--rounds 10] [--json OUT]

Each network is exported alone (``torch.onnx.export(dynamo=True)``, dynamic crop axis, as inside
the scorer's graph) and run by ONNX Runtime on ``--crops`` random 48x48 crops: 8 is one window of
the monitor (``[scorer] faces_per_window = 4``, each crop and its mirror). Rows:

* ``face_mesh``: the trunk up to the two outputs the face branch uses (``mmsa.model.facemesh``);
* ``expression``: the expression network as shipped (``mmsa.model.expression``);
* ``expression_padded``: the same network with every ``same`` padding as a padded copy (``F.pad``,
  then an unpadded convolution or pool), as it was written before 2026-12-05; its outputs are
  checked equal to the shipped one's first.

The rows are timed in turn, ``--rounds`` rounds of 30 calls each after a warm-up, so their ratio
holds on a busy machine where the absolute figures do not; ms = the median call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import device_info, load_avg, say, write_json


def padded_expression():
    """The expression network with its ``same`` pads as copies (the code before 2026-12-05)."""
    import torch.nn.functional as F

    from mmsa.model import expression as E

    def pad(x, value=0.0, stride=1):
        before, after = E._same(x.shape[-1], 3, stride)
        return F.pad(x, (before, after, before, after), value=value)

    class Padded(E.MiniXception):
        @staticmethod
        def _conv3_same(x, w, b=None, groups=1):
            return F.conv2d(pad(x), w, b, groups=groups)

        @staticmethod
        def _pool_same(x):
            return F.max_pool2d(pad(x, float("-inf"), 2), 3, 2)

    return Padded()


def networks():
    import torch

    from mmsa.model.expression import MiniXception
    from mmsa.model.facemesh import FEATURES, MAP, FaceMesh

    class Trunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mesh = FaceMesh(outputs=(FEATURES, MAP))

        def forward(self, x: torch.Tensor):
            out = self.mesh.outputs(x)
            return out[FEATURES], out[MAP]

    return {"face_mesh": Trunk(), "expression": MiniXception(), "expression_padded": padded_expression()}


def session(module, crops: int, threads: int, folder: Path):
    import onnxruntime as ort
    import torch

    x = torch.rand(crops, 1, 48, 48)
    with torch.no_grad():
        program = torch.onnx.export(module.eval(), (x,), dynamo=True, input_names=["x"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("crops")},))
    path = folder / f"{type(module).__name__}.onnx"
    program.save(str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    load0 = load_avg()
    rng = np.random.default_rng(0)
    x = rng.random((args.crops, 1, 48, 48), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {name: session(m, args.crops, args.threads, Path(tmp)) for name, m in networks().items()}
    outs = {name: s.run(None, {"x": x})[0] for name, s in sessions.items()}
    diff = float(np.abs(outs["expression"] - outs["expression_padded"]).max())
    if diff > 1e-5:
        print(f"error: the padded expression network differs from the shipped one by {diff}", file=sys.stderr)
        return 1
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            for _ in range(30):
                t = time.perf_counter()
                s.run(None, {"x": x})
                times[name].append(time.perf_counter() - t)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    for name, v in ms.items():
        say(f"{name:18s} {v:6.2f} ms per call of {args.crops} crops ({v / args.crops:.2f} ms per crop)")
    ratio = ms["expression_padded"] / ms["expression"]
    say(f"expression network: padded copies / shipped = {ratio:.2f}x (outputs equal within {diff:.1e})")
    write_json(args.json, {"device": device_info(), "load_avg_before": load0, "load_avg_after": load_avg(),
                           "crops": args.crops, "threads": args.threads, "ms_per_call": ms,
                           "expression_speedup": ratio, "max_output_diff": diff})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MediaPipe's face-landmark network (Face Mesh), run by torch, as a frozen face feature extractor.

The default model's face branch learns from about 2,000 FER2013 images, too few for a CNN to
learn what an expression looks like from scratch. Google's MediaPipe Face Mesh network was
trained on many faces to place 468 landmarks, so its features follow the mouth, the eyes and the
brows. ``[model] face_mesh = "packaged"`` adds its trunk's features to the image encoder
(``ImageEncoder``); the network is frozen and never stored in our checkpoints.

* Weights: ``model/assets/face_landmark.tflite``, byte-for-byte the file
  ``mediapipe/modules/face_landmark/face_landmark.tflite`` of the ``mediapipe==0.10.14`` wheel
  on PyPI (Apache License 2.0, ``model/assets/NOTICE``). Nothing is fetched at run time.
* The file is read here (a FlatBuffers reader of the few TFLite schema fields needed). Its seven
  operators (DEQUANTIZE of float16 constants, CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD,
  MAX_POOL_2D, PAD) run here as torch operations (channels-last tensors); TFLite's ``SAME``
  padding pads the extra row and column at the bottom/right, as TensorFlow does.
  ``tests/model/test_facemesh.py`` checks the outputs against Google's own TFLite runtime
  (``ai-edge-litert``). Each intermediate map is freed after its last reader.
* Input: our 48x48 gray face crop in [0, 1] (the FER2013 format, ``features.face_crop``) is
  padded by :data:`PAD` pixels of mid-gray on each side and resized to 192x192 (bilinear); the
  network's three colour channels are equal for a gray image, so it runs on one (the first
  convolution's weights summed). The network expects a face with some margin, and FER2013 crops
  are tight. (MediaPipe's own pipeline crops a frame around a detected face; on these crops we
  measured landmarks within 1.7 px of MediaPipe's at 48 px, without its detector.)
* Features: the trunk's last shared map, ``p_re_lu_17`` (3 x 3 x 128), flattened to 1,152
  values, before the network splits into its landmark and face-presence heads. On FER2013 this
  trunk with a logistic regression reached valence UAR 0.67 / 0.73 (valid / test) against
  0.49-0.53 for our CNN alone (``docs/default-model.md``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ResourceError

ASSET = Path(__file__).resolve().parent / "assets" / "face_landmark.tflite"
ASSET_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
"""sha256 of the shipped file (the mediapipe 0.10.14 wheel's); checkpoints record its first 12 digits."""
INPUT_SIZE = 192
PAD = 12
"""Pixels of mid-gray added on each side of a 48x48 crop before resizing to 192x192."""
FEATURES = "p_re_lu_17"
FEATURE_DIM = 3 * 3 * 128
MAP = "p_re_lu_12"
"""The trunk's last 12x12 feature map (12 x 12 x 128), the input of the image encoder's CNN with
``[model] face_cnn = "mesh"``."""
MAP_SIDE, MAP_CHANNELS = 12, 128
LANDMARKS = "conv2d_21"  # (1404,) = 468 x (x, y, z) in input pixels
FACE_FLAG = "conv2d_31"  # (1,) face-presence logit

_ACT = {0: None, 1: F.relu, 3: lambda x: x.clamp(0, 6)}  # TFLite ActivationFunctionType


class FaceMeshError(ResourceError):
    """The face-mesh asset is missing or is not the network this module can run."""


@dataclass(frozen=True)
class _Op:
    kind: str
    inputs: tuple[int, ...]
    output: int
    stride: int = 1
    kernel: int = 1
    same: bool = False
    act: int = 0


class _Table:
    """A table of a FlatBuffers buffer (the TFLite file format), read by field number."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, vt)[0]
        self.vt = vt

    def _field(self, i: int) -> int:
        at = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vt + at)[0] if at < self.vt_size else 0

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        off = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _target(self, i: int) -> int | None:
        off = self._field(i)
        if not off:
            return None
        p = self.pos + off
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> _Table | None:
        t = self._target(i)
        return None if t is None else _Table(self.buf, t)

    def tables(self, i: int) -> list[_Table]:
        t = self._target(i)
        if t is None:
            return []
        n = struct.unpack_from("<I", self.buf, t)[0]
        return [_Table(self.buf, t + 4 + 4 * k + struct.unpack_from("<I", self.buf, t + 4 + 4 * k)[0]) for k in range(n)]

    def vector(self, i: int, dtype: str) -> np.ndarray:
        t = self._target(i)
        if t is None:
            return np.zeros(0, dtype)
        n = struct.unpack_from("<I", self.buf, t)[0]
        return np.frombuffer(self.buf, dtype, n, t + 4)

    def string(self, i: int) -> str:
        return self.vector(i, "u1").tobytes().decode()


# TFLite schema numbers (tensorflow/lite/schema/schema.fbs)
_OPS = {0: "ADD", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 17: "MAX_POOL_2D", 34: "PAD", 54: "PRELU"}
_DTYPES = {0: "<f4", 1: "<f2", 2: "<i4"}
_SAME = 0  # Padding.SAME
# option fields: (padding, stride, kernel, activation) of each operator's options table
_OPTIONS = {"CONV_2D": (0, 2, None, 3), "DEPTHWISE_CONV_2D": (0, 2, None, 4), "MAX_POOL_2D": (0, 2, 4, 5)}


def _parse(path: Path) -> tuple[list[_Op], dict[int, torch.Tensor], dict[str, int], int]:
    """The graph of a .tflite file: operators, constant tensors (float32), name -> tensor id."""
    try:
        buf = path.read_bytes()
    except FileNotFoundError as exc:
        raise FaceMeshError(f"{path}: face-mesh network not found (reinstall mmsa-monitor)") from exc
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise FaceMeshError(f"{path}: not a TFLite model")
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in model.tables(1)]
    buffers = model.tables(4)
    graph = model.tables(2)[0]
    tensors = graph.tables(0)

    def const(t: int) -> torch.Tensor | None:
        tensor = tensors[t]
        data = buffers[tensor.scalar(2, "I")].vector(0, "u1")
        if not len(data):
            return None
        dtype = _DTYPES.get(tensor.scalar(1, "b"))
        if dtype is None:
            raise FaceMeshError(f"{path}: unsupported tensor type {tensor.scalar(1, 'b')}")
        value = np.frombuffer(data.tobytes(), dtype).reshape(tensor.vector(0, "<i4"))
        return torch.from_numpy(value.astype(np.int64 if dtype == "<i4" else np.float32))

    consts: dict[int, torch.Tensor] = {}
    ops: list[_Op] = []
    for op in graph.tables(3):
        kind = _OPS.get(codes[op.scalar(0, "I")])
        if kind is None:
            raise FaceMeshError(f"{path}: unsupported operator {codes[op.scalar(0, 'I')]}")
        ins = tuple(int(t) for t in op.vector(1, "<i4"))
        out = int(op.vector(2, "<i4")[0])
        for t in ins:
            if t >= 0 and t not in consts and (c := const(t)) is not None:
                consts[t] = c
        if kind == "DEQUANTIZE":
            consts[out] = consts[ins[0]]
            continue
        options = op.table(4)
        if kind in _OPTIONS:
            pad, stride, kernel, act = _OPTIONS[kind]
            k = int(tensors[ins[1]].vector(0, "<i4")[1]) if kernel is None else options.scalar(kernel, "i")
            stride_w, stride_h = options.scalar(stride - 1, "i"), options.scalar(stride, "i")
            dilation = {"CONV_2D": (4, 5), "DEPTHWISE_CONV_2D": (5, 6)}.get(kind, ())
            if stride_w != stride_h or any(options.scalar(f, "i", 1) != 1 for f in dilation):
                raise FaceMeshError(f"{path}: unsupported {kind} strides or dilation")
            ops.append(_Op(kind, ins, out, stride_h, k, options.scalar(pad, "b") == _SAME, options.scalar(act, "b")))
        elif kind == "ADD":
            ops.append(_Op(kind, ins, out, act=options.scalar(0, "b") if options else 0))
        else:
            ops.append(_Op(kind, ins, out))
        if ops[-1].act not in _ACT:
            raise FaceMeshError(f"{path}: unsupported fused activation {ops[-1].act}")
    tensor_ids = {t.string(3): i for i, t in enumerate(tensors)}
    return ops, consts, tensor_ids, int(graph.vector(1, "<i4")[0])


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """PReLU with one slope per channel. Exported (ONNX) as ``relu(x) (1 - slope) + x slope``, which
    equals it: ONNX Runtime's CPU convolutions keep their blocked layout through Relu, Mul and Add
    but not through a PRelu node, and the rewrite made its face mesh 2.4x faster
    (docs/performance.md); torch runs ``F.prelu``."""
    if torch.compiler.is_exporting():
        w = slope.reshape(1, -1, 1, 1)
        return F.relu(x) * (1 - w) + x * w
    return F.prelu(x, slope)


class FaceMesh(nn.Module):
    """The face-landmark network up to the tensors named in ``outputs`` (the rest is pruned).

    ``forward(x)`` takes (N, 3, 192, 192) in [0, 1] (or (N, 1, ...) for gray) and returns a dict
    name -> (N, ...) tensor, flattened in TFLite's NHWC order. :meth:`features` takes our (N, 1, 48, 48) crops.
    Weights are non-persistent buffers: never part of a ``state_dict``.
    """

    def __init__(self, path: Path = ASSET, outputs: tuple[str, ...] = (FEATURES,)) -> None:
        super().__init__()
        ops, consts, tensor_ids, self._input = _parse(Path(path))
        missing = [n for n in outputs if n not in tensor_ids]
        if missing:
            raise FaceMeshError(f"{path}: no tensor named {missing[0]}")
        self._outputs = {n: tensor_ids[n] for n in outputs}
        need = set(self._outputs.values())
        kept: list[_Op] = []
        for op in reversed(ops):  # keep only the operators the outputs depend on
            if op.output in need:
                kept.append(op)
                need.update(t for t in op.inputs if t >= 0 and t not in consts)
        self._ops = kept[::-1]
        # free every intermediate after its last reader: peak memory is a few maps, not all of them
        last: dict[int, int] = {}
        for i, op in enumerate(self._ops):
            for t in op.inputs:
                if t >= 0 and t not in consts:
                    last[t] = i
        keep = set(self._outputs.values())
        self._free = [[t for t, j in last.items() if j == i and t not in keep] for i in range(len(self._ops))]
        self._names: dict[int, str] = {}
        # PAD's paddings as Python ints (F.pad's arguments), not a buffer read while running: an
        # exporter (torch.export) cannot turn a buffer's values into sizes
        self._pads: dict[int, tuple[int, ...]] = {}
        for op in self._ops:
            if op.kind == "PAD":
                p = consts[op.inputs[1]].tolist()  # (4, 2) in NHWC order
                self._pads[op.output] = (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1])
            for t in op.inputs[:1] if op.kind == "PAD" else op.inputs:
                if t in consts and t not in self._names:
                    name = f"c{t}"
                    self._names[t] = name
                    self.register_buffer(name, self._layout(op, t, consts[t]), persistent=False)
        self.requires_grad_(False)

    @staticmethod
    def _layout(op: _Op, t: int, value: torch.Tensor) -> torch.Tensor:
        """A TFLite constant in the layout its torch operation wants."""
        if op.kind == "CONV_2D" and t == op.inputs[1]:
            return value.permute(0, 3, 1, 2).contiguous()  # OHWI -> OIHW
        if op.kind == "DEPTHWISE_CONV_2D" and t == op.inputs[1]:
            return value.permute(3, 0, 1, 2).contiguous()  # 1HWC -> C1HW
        if op.kind == "PRELU":
            return value.reshape(-1)  # (1, 1, C) -> (C,)
        return value

    def _pad_same(self, x: torch.Tensor, op: _Op, value: float = 0.0) -> torch.Tensor:
        if not op.same:
            return x
        top, bottom = _same_pad(x.shape[2], op.kernel, op.stride)
        left, right = _same_pad(x.shape[3], op.kernel, op.stride)
        return F.pad(x, (left, right, top, bottom), value=value)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # channels-last: torch's CPU depthwise convolutions run about twice as fast in it
        values: dict[int, torch.Tensor] = {self._input: x.contiguous(memory_format=torch.channels_last)}

        def get(t: int) -> torch.Tensor:
            return getattr(self, self._names[t]) if t in self._names else values[t]

        for op, free in zip(self._ops, self._free):
            a = get(op.inputs[0])
            if op.kind == "CONV_2D" or op.kind == "DEPTHWISE_CONV_2D":
                w = get(op.inputs[1]).to(a.dtype)
                b = get(op.inputs[2]).to(a.dtype) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
                groups = a.shape[1] if op.kind == "DEPTHWISE_CONV_2D" else 1
                if groups == 1 and a.shape[1] == 1 and w.shape[1] == 3:
                    w = w.sum(1, keepdim=True)  # a gray image (R = G = B): one channel does the work of three
                y = F.conv2d(self._pad_same(a, op), w, b, stride=op.stride, groups=groups)
            elif op.kind == "MAX_POOL_2D":
                y = F.max_pool2d(self._pad_same(a, op, float("-inf")), op.kernel, op.stride)
            elif op.kind == "ADD":
                y = a + get(op.inputs[1])
            elif op.kind == "PRELU":
                y = _prelu(a, get(op.inputs[1]).to(a.dtype))
            else:  # PAD
                y = F.pad(a, self._pads[op.output])
            act = _ACT[op.act]
            values[op.output] = act(y) if act is not None else y
            for t in free:
                del values[t]
        return {n: values[t].permute(0, 2, 3, 1).flatten(1) for n, t in self._outputs.items()}

    @staticmethod
    def prepare(faces: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) gray crops in [0, 1] -> (N, 1, 192, 192) network input (gray: the network's
        three colour channels are equal, :meth:`forward` takes the one channel for all three)."""
        pad = round(PAD * faces.shape[-1] / 48)
        x = F.pad(faces, (pad, pad, pad, pad), value=0.5)
        return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    CHUNK = 16
    """Crops per forward pass, always this many (the last chunk is padded): larger batches of
    192x192 maps only cost memory and cache misses (on the 2-core machine 2.6-4.3 ms per crop in
    chunks of 8-32, 7.9 ms in one batch of 512), and every other batch size makes the CPU
    convolution library cache another set of kernels (about 110 MB for the sizes 1 to 16)."""

    def features(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) gray crops in [0, 1] -> (N, FEATURE_DIM) trunk features (no gradient)."""
        return self.outputs(faces)[FEATURES]

    def outputs(self, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 1, S, S) gray crops in [0, 1] -> every output tensor of this trunk, (N, ...) flattened
        in TFLite's NHWC order (no gradient). :data:`MAP`, when asked for, comes back as (N, C, H, W)."""
        if torch.compiler.is_exporting():  # one pass over however many crops the graph gets
            return self._map_nchw(self(self.prepare(faces)))
        n = len(faces)
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self._outputs}
        with torch.no_grad():
            for i in range(0, n, self.CHUNK):
                chunk = faces[i : i + self.CHUNK]
                if len(chunk) < self.CHUNK:
                    chunk = torch.cat([chunk, chunk.new_zeros(self.CHUNK - len(chunk), *chunk.shape[1:])])
                for name, value in self(self.prepare(chunk)).items():
                    parts[name].append(value)
        out = {name: torch.cat(v)[:n] if v else faces.new_zeros(0, 0) for name, v in parts.items()}
        if MAP in out and n == 0:
            out[MAP] = faces.new_zeros(0, MAP_SIDE * MAP_SIDE * MAP_CHANNELS)
        if FEATURES in out and n == 0:
            out[FEATURES] = faces.new_zeros(0, FEATURE_DIM)
        return self._map_nchw(out)

    @staticmethod
    def _map_nchw(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:data:`MAP` from its flattened NHWC form to (N, C, H, W) (no size through ``int()``: exportable)."""
        if MAP in out:
            out[MAP] = out[MAP].reshape(-1, MAP_SIDE, MAP_SIDE, MAP_CHANNELS).permute(0, 3, 1, 2)
        return out


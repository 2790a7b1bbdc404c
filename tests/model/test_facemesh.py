"""The torch port of MediaPipe's face-landmark network against Google's own TFLite runtime."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from mmsa.model import facemesh
from mmsa.model.facemesh import FACE_FLAG, FEATURE_DIM, FEATURES, LANDMARKS, FaceMesh, FaceMeshError
from mmsa.model.features import face_crop

ASTRONAUT_FACE = (174, 64, 99, 99)  # x, y, w, h of the face in scikit-image's astronaut.png


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Real faces as our pipeline crops them: the astronaut, her mirror image, and a dark copy."""
    from skimage import data

    frame = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    face = face_crop(frame, ASTRONAUT_FACE)  # (1, 48, 48) in [0, 1]
    return torch.stack([face, torch.flip(face, dims=[2]), face * 0.5])


@pytest.fixture(scope="module")
def net() -> FaceMesh:
    return FaceMesh(outputs=(FEATURES, LANDMARKS, FACE_FLAG))


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`:UserWarning")
def test_port_matches_the_tflite_runtime(net, crops):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) not installed")
    interp = litert.Interpreter(str(facemesh.ASSET), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    ids = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    x = FaceMesh.prepare(crops).expand(-1, 3, -1, -1)  # the network's RGB input
    ours = net(x)
    gray = net(FaceMesh.prepare(crops))  # what the model feeds it: one gray channel for the three
    for name in ours:
        torch.testing.assert_close(gray[name], ours[name], rtol=1e-4, atol=1e-4)
    for i in range(len(crops)):
        interp.set_tensor(interp.get_input_details()[0]["index"], x[i : i + 1].permute(0, 2, 3, 1).numpy().copy())
        interp.invoke()
        for name in (FEATURES, LANDMARKS, FACE_FLAG):
            ref = interp.get_tensor(ids[name]).reshape(-1)
            got = ours[name][i].numpy()
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_landmarks_follow_the_face(net, crops):
    out = net(FaceMesh.prepare(crops))
    assert (out[FACE_FLAG] > 0).all()  # a face-presence logit: the network sees a face in each crop
    pts = out[LANDMARKS].view(len(crops), 468, 3)[..., :2]
    # the face fills the padded 192 px input: landmarks stay inside it and spread over most of it
    assert (pts > 0).all() and (pts < 192).all()
    assert ((pts.amax(1) - pts.amin(1)) > 80).all()
    # mirrored face, mirrored landmarks: the nose tip (landmark 1) moves to 192 - x
    nose, nose_flipped = pts[0, 1], pts[1, 1]
    assert abs(float(nose[0] + nose_flipped[0]) - 192) < 6 and abs(float(nose[1] - nose_flipped[1])) < 6


def test_features_take_our_crops_and_stay_out_of_checkpoints(crops):
    mesh = FaceMesh()
    feats = mesh.features(crops)
    assert feats.shape == (3, FEATURE_DIM) and torch.isfinite(feats).all()
    assert not feats.requires_grad and not any(p.requires_grad for p in mesh.parameters())
    assert mesh.state_dict() == {}  # frozen weights are non-persistent buffers, read from the package
    # many crops run in chunks of FaceMesh.CHUNK: the same features as one at a time
    many = torch.cat([crops] * 7)  # 21 crops: one full chunk and a partial one
    assert len(many) > FaceMesh.CHUNK
    torch.testing.assert_close(mesh.features(many)[-3:], feats, rtol=1e-4, atol=1e-4)
    assert mesh.features(many[:0]).shape == (0, FEATURE_DIM)
    # a 96 px crop gets the same margin as a 48 px one (the pad scales with the crop)
    big = torch.nn.functional.interpolate(crops, size=(96, 96), mode="bilinear", align_corners=False)
    assert FaceMesh.prepare(big).shape == (3, 1, 192, 192)


def test_bad_asset_is_one_clear_error(tmp_path):
    with pytest.raises(FaceMeshError, match="not found"):
        FaceMesh(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(FaceMeshError, match="not a TFLite model"):
        FaceMesh(junk)
    copy = tmp_path / "mesh.tflite"
    shutil.copy(facemesh.ASSET, copy)
    with pytest.raises(FaceMeshError, match="no tensor named"):
        FaceMesh(copy, outputs=("nope",))

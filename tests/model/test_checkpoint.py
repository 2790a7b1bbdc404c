import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from mmsa.model import CheckpointError, MMSAModel, collate, load_checkpoint, read_info, save_checkpoint
from mmsa.model.features import FeatureConfig
from tests.model.helpers import random_sample, seeded, tiny_config


@pytest.fixture()
def model(tiny_bert):
    torch.manual_seed(0)
    m = MMSAModel.build(tiny_config(tiny_bert), tiny_bert)
    # make BatchNorm statistics non-trivial so the round trip covers buffers
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
    return m.eval()


def test_round_trip_is_exact(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="tiny", training={"data": "synthetic"},
                           metrics={"valid": {"mae": 1.0}})
    loaded = load_checkpoint(path)
    a, b = model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rng = seeded(4)
    batch = collate([random_sample(rng), random_sample(rng, n_faces=0)], tokenizer)
    with torch.inference_mode():
        assert torch.equal(model(batch).score, loaded.model(batch).score)
    info = loaded.info
    assert info.name == "tiny" and info.metrics == {"valid": {"mae": 1.0}}
    assert info.label_scale == [-3.0, 3.0] and info.tag.startswith("tiny@") and len(info.digest) == 12
    assert info.feature_fingerprint == FeatureConfig().fingerprint()


def test_bert_delta_stores_only_changed_tensors(tmp_path, model):
    with torch.no_grad():
        layer = model.text.bert.encoder.layer[1].output.dense
        layer.weight.add_(0.5)
    full = save_checkpoint(tmp_path / "full.safetensors", model, name="full")
    delta = save_checkpoint(tmp_path / "delta.safetensors", model, name="delta", bert_delta=True)
    assert delta.stat().st_size < full.stat().st_size / 2
    loaded = load_checkpoint(delta).model
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_info(delta).bert_base["digest"]


def test_feature_mismatch_is_refused_naming_the_setting(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="x", features=FeatureConfig(frames_per_window=4))
    with pytest.raises(CheckpointError, match=r"frames_per_window \(checkpoint 4, code 8\)"):
        load_checkpoint(path)


def test_wrong_files_are_refused(tmp_path, model):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an mmsa-monitor checkpoint"):
        load_checkpoint(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(junk)
    from mmsa.model import ResourceError

    with pytest.raises(ResourceError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_architecture_mismatch_is_refused(tmp_path, model, tiny_bert):
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="x")
    # tamper with the stored config: a wider hidden layer than the tensors hold
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    cfg = json.loads(meta["model_config"])
    cfg["hidden_dim"] = 24
    meta["model_config"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)


def test_config_dataclass_round_trip(model):
    cfg = model.cfg
    assert dataclasses.replace(cfg) == cfg


def test_bert_moved_elsewhere_is_found_through_the_override(tmp_path, tiny_bert):
    import shutil

    from mmsa.model import ResourceError

    here = tmp_path / "bert"
    shutil.copytree(tiny_bert, here)
    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(here), here).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="moved")
    moved = tmp_path / "elsewhere"
    here.rename(moved)
    with pytest.raises(ResourceError, match="not a BERT directory"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, bert=moved).model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_face_mesh_checkpoint_records_the_packaged_network_and_refuses_another(tmp_path, tiny_bert, tokenizer):
    import hashlib

    from safetensors import safe_open

    from mmsa.model import facemesh

    # the shipped file is byte for byte MediaPipe's (model/assets/NOTICE)
    assert hashlib.sha256(facemesh.ASSET.read_bytes()).hexdigest() == facemesh.ASSET_SHA256
    torch.manual_seed(0)
    m = MMSAModel.build(tiny_config(tiny_bert, face_mesh="packaged", vision_head="valence3"), tiny_bert).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", m, name="mesh")
    info = read_info(path)
    assert info.face_mesh == {"file": "face_landmark.tflite", "digest": facemesh.ASSET_SHA256[:12]}
    loaded = load_checkpoint(path)
    b = collate([random_sample(seeded(1))], tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.model(b).unimodal["vision"], m(b).unimodal["vision"])
    # the same weights, said to be trained on another face-mesh file: refused in one line
    with safe_open(str(path), framework="pt") as fh:
        meta, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    meta["face_mesh"] = json.dumps({"file": "face_landmark.tflite", "digest": "0123456789ab"})
    other = tmp_path / "other.safetensors"
    save_file(state, str(other), metadata=meta)
    with pytest.raises(CheckpointError, match=r"trained on the face-mesh network .*0123456789ab"):
        load_checkpoint(other)
    # checkpoints without a face mesh record none
    assert read_info(save_checkpoint(tmp_path / "plain.safetensors", MMSAModel.build(tiny_config(tiny_bert), tiny_bert),
                                     name="plain")).face_mesh is None

"""examples/face_heads.py: the face head trained standalone over the frozen trunk's outputs of FER2013
(the model card's face rows on the mirror pass and on jittering the trunk's input)."""

from __future__ import annotations

import json

import torch

from mmsa.model.facemesh import FEATURES, MAP, FaceMesh
from tests.conftest import load_example


def test_trunk_keeps_the_mirror_second_with_its_map_flipped_back():
    heads = load_example("face_heads")
    torch.manual_seed(0)
    faces = torch.rand(3, 1, 48, 48)
    mesh = FaceMesh(outputs=(FEATURES, MAP)).eval()
    vec, fmap = heads.trunk(mesh, faces)
    assert vec.shape == (3, 2, 1152) and fmap.shape == (3, 2, 128, 12, 12)
    vec_m, fmap_m = heads.trunk(mesh, torch.flip(faces, dims=[3]))
    assert torch.allclose(vec[:, 1].float(), vec_m[:, 0].float(), atol=1e-2)  # the mirror is the flipped face
    assert torch.allclose(fmap[:, 1].float(), torch.flip(fmap_m[:, 0].float(), dims=[3]), atol=1e-2)


def test_jitter_moves_every_face_within_range():
    heads = load_example("face_heads")
    faces = torch.rand(4, 1, 48, 48) * 0.5 + 0.25
    out = heads.jitter(faces, torch.Generator().manual_seed(1))
    assert out.shape == faces.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert (out - faces).abs().mean((1, 2, 3)).min() > 1e-3
    assert torch.equal(out, heads.jitter(faces, torch.Generator().manual_seed(1)))  # seeded


def test_trains_and_reports_every_mode_on_real_faces(data_dir, tmp_path):
    heads = load_example("face_heads")
    out = tmp_path / "faces.json"
    assert heads.main(["--data", str(data_dir), "--seeds", "1", "--epochs", "2", "--limit", "48",
                       "--jitter", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == {"train": 48, "valid": 48, "test": 48}
    for mode in heads.MODES:
        valid, test, epoch = res["runs"]["1"][mode]
        assert 0.0 < valid <= 1.0 and 0.0 <= test <= 1.0 and epoch in (1, 2)
        assert res["modes"][mode]["valid"][0] == valid and res["modes"][mode]["valid"][1] == 0.0


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    heads = load_example("face_heads")
    assert heads.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("face_heads: missing ") and len(err.splitlines()) == 1


def test_expression_features_join_and_float32_keeps_the_trunk_as_computed(data_dir, tmp_path):
    heads = load_example("face_heads")
    torch.manual_seed(0)
    faces = torch.rand(3, 1, 48, 48)
    mesh = FaceMesh(outputs=(FEATURES, MAP)).eval()
    vec32, fmap32 = heads.trunk(mesh, faces, half=False)
    vec16, _ = heads.trunk(mesh, faces)
    assert vec32.dtype == fmap32.dtype == torch.float32 and vec16.dtype == torch.float16
    assert torch.allclose(vec32.half().float(), vec16.float())
    expr = heads.expression_features(heads.MiniXception().eval(), faces)
    assert expr.shape == (3, 2, 135)
    assert torch.allclose(expr[:, 1], heads.expression_features(heads.MiniXception().eval(), torch.flip(faces, dims=[3]))[:, 0],
                          atol=1e-5)  # the mirror's features are those of the flipped face
    out = tmp_path / "faces.json"
    assert heads.main(["--data", str(data_dir), "--seeds", "1", "--epochs", "2", "--limit", "48",
                       "--expression", "--float32", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["expression"] is True and res["float32"] is True
    for mode in heads.MODES:
        valid, test, epoch = res["runs"]["1"][mode]
        assert 0.0 < valid <= 1.0 and 0.0 <= test <= 1.0 and epoch in (1, 2)

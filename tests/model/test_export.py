"""The ONNX runtime (mmsa.model.export, mmsa.model.onnxrt) against torch, the reference.

Graphs of small models (the tiny test BERT) are exported for real and run by ONNX Runtime; the
scores must match torch's within ``TOL`` (measured: within 1e-6) on every presence pattern of the
modalities, including batches where a branch has no row at all.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmsa.model import DEFAULT_FEATURES, MODALITIES, MMSAModel, load_checkpoint, save_checkpoint
from mmsa.model.export import graph_key, graph_path, load_graph
from mmsa.model.onnxrt import MEMO_CROPS, GraphError, OnnxModel, RuntimeMissingError, faces_graph, run_groups
from tests.conftest import REPO
from tests.model.helpers import batch, random_sample, seeded, tiny_config

TOL = 1e-4
"""Largest difference allowed between a torch score and the runtime's (scores span [-3, 3])."""

pytestmark = pytest.mark.slow


def assert_same_scores(graph, model: MMSAModel, x) -> None:
    with torch.inference_mode():
        want = model.eval()(x)
    got = graph(x)
    for name, g, w in [("score", got.score, want.score)] + [(m, got.unimodal[m], want.unimodal[m]) for m in MODALITIES]:
        assert torch.equal(torch.isnan(g), torch.isnan(w)), name
        assert torch.nan_to_num(g).sub(torch.nan_to_num(w)).abs().max() <= TOL, name


def presence_batches(rng, tokenizer, features=DEFAULT_FEATURES):
    """A batch mixing every presence pattern, then one batch per pattern (a branch with no rows)."""
    full = [random_sample(rng, text=t, seconds=s, n_faces=k, features=features)
            for t, s, k in [("it was really good", 1.5, 5), ("not bad at all", 2.2, 3), ("terrible", 0.8, 8)]]

    def drop(s, absent):
        return dataclasses.replace(s, text=None if "text" in absent else s.text,
                                   audio=None if "audio" in absent else s.audio,
                                   faces=None if "vision" in absent else s.faces)

    patterns = [set(c) for n in range(4) for c in itertools.combinations(MODALITIES, n)]
    yield batch(tokenizer, [drop(full[i % 3], p) for i, p in enumerate(patterns)], features)
    for p in patterns:
        yield batch(tokenizer, [drop(s, p) for s in full], features)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_bert):
    """Tiny checkpoints of the three fusions (late with the packaged face mesh and the valence head), and
    ``whisper``: the default model's layout (Whisper's encoder statistics as the audio input, valence heads,
    the calibrated fusion with the text gate and a text prior, the CNN on the face mesh's map beside the
    expression network, an ensemble of two face branches: a split graph)."""
    out = {}
    for key, fusion, extra in [("concat", "concat", {}), ("attention", "attention", {}),
                               ("late", "late", {"face_mesh": "packaged", "vision_head": "valence3"}),
                               ("whisper", "calibrated", {"audio_input": "whisper", "audio_head": "valence3",
                                                          "vision_head": "valence3", "calibration": (0.7, 1.2, 1.0),
                                                          "fusion_gate": "text", "text_prior": (0.3, 0.2, 0.5),
                                                          "vision_members": 2, "face_mesh": "packaged",
                                                          "face_cnn": "mesh", "face_expression": "packaged"})]:
        torch.manual_seed(0)
        model = MMSAModel.build(tiny_config(tiny_bert, fusion=fusion, **extra), tiny_bert).eval()
        out[key] = save_checkpoint(tmp_path_factory.mktemp(key) / "m.safetensors", model, name=f"tiny-{key}")
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("graphs")


@pytest.mark.parametrize("fusion", ["concat", "attention", "late", "whisper"])
def test_exported_graph_matches_torch_on_every_presence_pattern(fusion, checkpoints, cache, tokenizer):
    loaded = load_checkpoint(checkpoints[fusion])
    graph = load_graph(loaded, cache)
    fixed = [loaded.features.audio_dim, 1152, 128, 12, 12, 135] if fusion == "whisper" else [loaded.features.audio_dim, 1, 48, 48]
    assert [d for i in graph.session.get_inputs() for d in i.shape if not isinstance(d, str)] == fixed, \
        "only the feature sizes are fixed; batch, tokens, frames and crops are axes"
    assert graph.split == (fusion == "whisper") and faces_graph(graph.path).is_file() == graph.split
    for x in presence_batches(seeded(1), tokenizer, loaded.features):
        assert_same_scores(graph, loaded.model, x)


def test_split_graph_runs_the_face_networks_ahead(checkpoints, cache, tokenizer):
    """The default's layout: its faces graph gives the trunk's and the expression network's outputs as torch does;
    a window's crops prepared ahead are looked up when it is scored (the same scores), and the others computed."""
    loaded = load_checkpoint(checkpoints["whisper"])
    graph = load_graph(loaded, cache)
    rng = seeded(4)
    samples = [random_sample(rng, n_faces=k, features=loaded.features) for k in (4, 3, 0, 5)]
    x = batch(tokenizer, samples, loaded.features)
    crops = samples[0].faces
    with torch.inference_mode():
        want = loaded.model.vision.mesh_features(crops)
    got = graph.face_outputs(crops.numpy())
    for g, w in zip(got, (want.vec, want.map, want.expr)):
        assert g.shape == tuple(w.shape) and np.abs(g - w.numpy()).max() <= TOL
    before = graph(x).score
    assert graph.memo_hits == 0
    for per_run in (1, 3):  # the faces graph's runs put back together in the crops' order
        assert_same_scores(OnnxModel(graph.path, faces_per_run=per_run), loaded.model, x)
    graph.prepare(samples[0].faces)
    graph.prepare(samples[3].faces[:2])  # part of a window: the rest is computed when it is scored
    assert_same_scores(graph, loaded.model, x)
    assert graph.memo_hits == 4 + 2
    assert torch.equal(graph(x).score, before)
    assert graph.memo_hits == 2 * (4 + 2)
    graph.prepare(samples[0].faces)  # prepared again: found, not counted as scoring's hits
    assert graph.memo_hits == 2 * (4 + 2)
    graph.prepare(np.zeros((0, 1, 48, 48), np.float32))  # nothing to do
    for k in range(MEMO_CROPS + 3):  # the memo keeps the latest crops only
        graph.prepare(np.full((1, 1, 48, 48), k / 1000, np.float32))
    assert len(graph._memo) == MEMO_CROPS


def test_split_graph_without_its_faces_graph_is_rebuilt_or_refused(checkpoints, cache, tmp_path):
    loaded = load_checkpoint(checkpoints["whisper"])
    built = load_graph(loaded, cache).path
    path = tmp_path / built.name  # a copy of the graph alone, without its faces graph
    shutil.copy(built, path)
    with pytest.raises(GraphError, match="faces graph .* is missing"):
        OnnxModel(path)
    with pytest.raises(GraphError, match="faces graph .* is missing") as err:
        load_graph(loaded, tmp_path, build=False)
    assert "\n" not in str(err.value)
    graph = load_graph(loaded, tmp_path)  # rebuilt
    assert graph.path == path and graph.split and faces_graph(path).is_file()
    faces_graph(path).write_bytes(load_graph(load_checkpoint(checkpoints["late"]), cache).path.read_bytes())
    with pytest.raises(GraphError, match="not a faces graph") as err:
        OnnxModel(path)
    assert "\n" not in str(err.value)


def test_runs_split_by_faces_give_the_same_scores(checkpoints, cache, tokenizer):
    loaded = load_checkpoint(checkpoints["late"])
    rng = seeded(2)
    x = batch(tokenizer, [random_sample(rng, n_faces=k, seconds=1.0 + k / 4) for k in (8, 0, 3, 5, 1, 8)])
    path = load_graph(loaded, cache).path
    for per_run in (1, 4, 8, 64):
        assert_same_scores(OnnxModel(path, faces_per_run=per_run), loaded.model, x)
    # the runs of a batch at once on two threads, or one after another on two intra-op threads: torch's scores
    # either way, and each other's within float rounding
    at_once, in_turn = OnnxModel(path, threads=2), OnnxModel(path, threads=2, parallel_runs=False)
    assert at_once.parallel_runs and not in_turn.parallel_runs and not OnnxModel(path, threads=1).parallel_runs
    for graph in (at_once, in_turn):
        assert_same_scores(graph, loaded.model, x)
    assert torch.allclose(at_once(x).score, in_turn(x).score, atol=1e-6, equal_nan=True)
    assert at_once._pool is not None and in_turn._pool is None
    assert run_groups(np.array([8, 0, 3, 5, 1, 8]), 8) == [slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 6)]
    assert run_groups(np.array([9, 2]), 8) == [slice(0, 1), slice(1, 2)]


def test_the_scorer_takes_every_cpu_even_after_whisper_set_torchs_threads(checkpoints, cache):
    """Loading a CTranslate2 model (here the audio branch's Whisper encoder, one thread) sets the process's
    OpenMP thread count, which torch reads back; the ONNX scorer's default is the CPUs the process may use."""
    from mmsa.model.runtime import cpu_threads
    from mmsa.model.speech import SpeechEncoder

    before = torch.get_num_threads()
    try:
        SpeechEncoder(threads=1)
        graph = OnnxModel(load_graph(load_checkpoint(checkpoints["late"]), cache).path)
        assert graph.threads == cpu_threads() == len(os.sched_getaffinity(0))
        assert graph.parallel_runs == (cpu_threads() > 1)
    finally:
        torch.set_num_threads(before)


def test_graph_is_built_once_and_reused(checkpoints, cache):
    loaded = load_checkpoint(checkpoints["concat"])
    path = load_graph(loaded, cache).path
    stamp = path.stat().st_mtime_ns
    assert load_graph(load_checkpoint(checkpoints["concat"]), cache).path == path
    assert path.stat().st_mtime_ns == stamp
    assert graph_path(loaded, cache) == path and path.name.startswith("tiny-concat-")


def test_changed_checkpoint_rebuilds_its_graph(tmp_path, tiny_bert, tokenizer):
    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert).eval()
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, name="changing")
    first = load_graph(load_checkpoint(ckpt), tmp_path / "graphs").path
    with torch.no_grad():
        model.heads["text"][-1].bias.add_(0.5)
    save_checkpoint(ckpt, model, name="changing")
    loaded = load_checkpoint(ckpt)
    graph = load_graph(loaded, tmp_path / "graphs")
    assert graph.path != first and not first.exists(), "the old checkpoint's graph is replaced"
    assert graph.key == graph_key(loaded)
    assert_same_scores(graph, loaded.model, batch(tokenizer, [random_sample(seeded(3))]))


def test_foreign_graph_in_the_cache_is_rebuilt(checkpoints, cache, tmp_path, caplog):
    other = load_graph(load_checkpoint(checkpoints["attention"]), cache).path
    loaded = load_checkpoint(checkpoints["concat"])
    path = graph_path(loaded, tmp_path)
    path.write_bytes(other.read_bytes())  # another model's graph under this checkpoint's name
    graph = load_graph(loaded, tmp_path)
    assert graph.key == graph_key(loaded) and "rebuilding" in caplog.text


def test_stale_graph_is_refused_in_one_line_when_building_is_off(tmp_path, tiny_bert):
    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert).eval()
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, name="prebuilt")
    old = load_graph(load_checkpoint(ckpt), tmp_path / "graphs").path
    with torch.no_grad():
        model.heads["audio"][0].weight.mul_(2)
    save_checkpoint(ckpt, model, name="prebuilt")
    with pytest.raises(GraphError) as err:
        load_graph(load_checkpoint(ckpt), tmp_path / "graphs", build=False)
    msg = str(err.value)
    assert "\n" not in msg and f"{old.name} is stale" in msg and "python -m mmsa.model.export" in msg


def test_unreadable_graph_is_one_line(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(GraphError, match="not a readable ONNX graph") as err:
        OnnxModel(bad)
    assert "\n" not in str(err.value)


def test_missing_onnxruntime_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets where it is not installed
    with pytest.raises(RuntimeMissingError, match="pip install onnxruntime") as err:
        OnnxModel(tmp_path / "x.onnx")
    assert "\n" not in str(err.value)


def test_mmsa_eval_without_onnxruntime_says_so_in_one_line(tmp_path, checkpoints):
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,clip_id,text,label,mode\nv,1,it was good,1.0,test\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MMSA_GRAPH_CACHE": str(tmp_path / "graphs")}
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from mmsa.training.cli import eval_main; sys.exit(eval_main())",
         "--model", str(checkpoints["concat"]), "--dataset", "mosi", "--labels", str(labels), "--modalities", "text",
         "--out", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.csv"), "--cache", str(tmp_path / "c"),
         "--runtime", "onnx", "--device", "cpu"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.stderr and last.startswith("error: ") and "pip install onnxruntime" in last

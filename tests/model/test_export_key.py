"""The code digest of an ONNX graph's key (``mmsa.model.export``): it covers every source file the exported
forward pass reads, inside the model package and outside it (``mmsa.common.scale``: the polarity band)."""

from __future__ import annotations

import re
import shutil

import mmsa.common.scale
from mmsa.model import export
from tests.conftest import REPO


def test_the_digest_hashes_the_model_package_and_the_scale_module():
    files = export.source_files()
    assert (REPO / "common" / "scale.py").resolve() in files
    model = {f.name for f in files if f.parent == (REPO / "model").resolve()}
    assert model == {p.name for p in (REPO / "model").glob("*.py")} - {"onnxrt.py"}


def test_every_common_module_the_model_reads_is_hashed_or_known_not_to_shape_a_graph():
    """A model module that starts reading another ``mmsa.common`` module must decide whether it shapes the graph."""
    not_graph = {"errors", "settings", "packages", "cli"}  # errors, config loading, package lookup, the CLI runner
    used = set()
    for f in export.source_files():
        if f.parent == (REPO / "model").resolve():
            used |= set(re.findall(r"(?:from|import) mmsa\.common\.(\w+)", f.read_text()))
    assert "scale" in used
    assert used - not_graph <= {m.rsplit(".", 1)[1] for m in export.FORWARD_OUTSIDE}


def test_a_changed_scale_module_changes_the_graph_key(tmp_path, monkeypatch):
    copy = tmp_path / "common" / "scale.py"
    copy.parent.mkdir()
    shutil.copy(mmsa.common.scale.__file__, copy)
    before = export._source_digest()
    monkeypatch.setattr(mmsa.common.scale, "__file__", str(copy))
    assert export._source_digest() == before  # the same content under the same name: the same digest
    copy.write_text(copy.read_text().replace("NEUTRAL_BAND = 0.5", "NEUTRAL_BAND = 0.25"))
    assert "NEUTRAL_BAND = 0.25" in copy.read_text()
    assert export._source_digest() != before

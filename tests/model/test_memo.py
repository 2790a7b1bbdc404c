"""The training memo of the frozen face networks' outputs (mmsa.model.memo, ImageEncoder.remember)."""

from __future__ import annotations

import pytest
import torch

from mmsa.model.encoders import ImageEncoder
from mmsa.model.memo import RowMemo, row_key


class Counting:
    """A deterministic row-wise function that counts the rows it computed."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, x: torch.Tensor):
        self.rows += len(x)
        return x * 2, None, x.sum(dim=(1, 2, 3))


def test_rows_seen_before_are_looked_up_and_only_new_rows_computed():
    fn, memo = Counting(), RowMemo()
    x = torch.rand(4, 1, 3, 3)
    first = memo(fn, x)
    assert fn.rows == 4 and memo.misses == 4 and memo.hits == 0
    # a batch mixing two known rows (one twice) with a new one, in another order
    y = torch.cat([x[2:3], torch.rand(1, 1, 3, 3), x[0:1], x[2:3]])
    got = memo(fn, y)
    want = fn(y)
    assert fn.rows == 4 + 1 + 4  # the memo computed the one new row; `want` computed all four
    assert got[1] is None and torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert torch.equal(first[0], x * 2) and memo.hits == 3 and memo.misses == 5
    again = memo(fn, y)
    assert fn.rows == 9 and torch.equal(again[0], want[0])


def test_the_key_is_the_rows_values_dtype_and_shape():
    a = torch.zeros(1, 4, 4)
    assert row_key(a) == row_key(a.clone())
    assert row_key(a) != row_key(a.double()) and row_key(a) != row_key(a.reshape(1, 2, 8))
    b = a.clone()
    b[0, 3, 3] = 1e-7
    assert row_key(a) != row_key(b)


def test_beyond_the_budget_rows_are_computed_and_not_kept():
    fn = Counting()
    one_row = 9 * 4 + 4  # x * 2 and the sum, float32
    memo = RowMemo(budget_bytes=2 * one_row)
    x = torch.rand(3, 1, 3, 3)
    memo(fn, x)
    assert len(memo.rows) == 2 and memo.bytes == 2 * one_row
    got = memo(fn, x)
    assert fn.rows == 4 and torch.equal(got[0], x * 2)  # the third row again, the first two looked up
    with pytest.raises(ValueError, match="budget_bytes"):
        RowMemo(-1)


@pytest.mark.parametrize("expression_net", [False, True])
def test_the_face_branch_gives_the_same_features_with_the_memo(expression_net):
    """The real frozen Face Mesh trunk (and expression network): averaged features, and in training the
    same random orientation per crop, bit for bit with and without the memo; the second pass
    computes nothing."""
    torch.manual_seed(0)
    img = ImageEncoder((4, 8), 2, 4, 16, face_mesh=True, cnn_input="mesh", expression_net=expression_net).eval()
    faces = torch.rand(5, 1, 48, 48)
    plain = img.mesh_features(faces)
    torch.manual_seed(1)
    plain_tv = img.mesh_features(faces, train_view=True)
    img.remember()
    for _ in range(2):
        kept = img.mesh_features(faces)
        torch.manual_seed(1)
        kept_tv = img.mesh_features(faces, train_view=True)
        for a, b in ((plain, kept), (plain_tv, kept_tv)):
            assert torch.equal(a.vec, b.vec) and torch.equal(a.map, b.map)
            assert (a.expr is None and b.expr is None) or torch.equal(a.expr, b.expr)
    assert img.frozen_memo.misses == 5 and img.frozen_memo.hits == 15
    assert (plain.expr is not None) == expression_net

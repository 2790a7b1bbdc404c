import pytest
import torch
import torch.nn.functional as F

from mmsa.model.losses import LossConfig, info_nce, joint_loss
from mmsa.model.network import ModelOutput


def test_infonce_lower_for_matched_views_than_shuffled():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    z1 = z + 0.05 * torch.randn(16, 32, generator=g)
    z2 = z + 0.05 * torch.randn(16, 32, generator=g)
    matched = info_nce(z1, z2, 0.1)
    shuffled = info_nce(z1, z2[torch.randperm(16, generator=g)], 0.1)
    assert matched < 0.1 < shuffled


def test_infonce_hand_computed_case():
    # n = 2, orthogonal unit vectors, views identical: logits of view 0 are [-inf, 0, 1, 0] / tau
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    loss = info_nce(z1, z1.clone(), tau)
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 2))
    assert torch.allclose(loss, expected)


def test_infonce_needs_two_rows():
    z = torch.randn(1, 8, requires_grad=True)
    loss = info_nce(z, z, 0.1)
    assert loss.item() == 0.0
    loss.backward()


def _text_only(score: list[float]) -> ModelOutput:
    s = torch.tensor(score, requires_grad=True)
    presence = torch.tensor([[True, False, False]] * len(score))
    return ModelOutput(score=s, unimodal={}, presence=presence, views={})


def test_the_sign_term_counts_only_rows_with_a_sign_and_pushes_wrong_signs_hardest():
    out = _text_only([-1.0, 0.0, 1.0, 0.5])
    labels = torch.tensor([2.0, 0.0, 1.0, -1.0])  # row 1 (label 0) is not counted
    cfg = LossConfig(task="l1", unimodal=0.0, text=0.0, audio=0.0, vision=0.0, sign=0.5)
    got = joint_loss(out, labels, cfg)
    sign = (F.softplus(torch.tensor(1.0)) + F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(0.5))) / 3
    l1 = torch.tensor([3.0, 0.0, 0.0, 1.5]).mean()
    assert got.parts["sign"] == pytest.approx(float(sign))
    assert float(got.total.detach()) == pytest.approx(float(l1 + 0.5 * sign))
    got.total.backward()
    grad = out.score.grad
    # the L1 part moves rows 0 and 3 by 1/4 toward their labels (rows 1 and 2 sit on theirs: no L1 gradient);
    # the sign term adds to rows 0, 2, 3 only, most to the scores on the wrong side of 0 (rows 0 and 3),
    # least to the one already right (row 2)
    extra = grad.abs() - torch.tensor([0.25, 0.0, 0.0, 0.25])
    assert extra[1] == 0
    assert extra[0] > extra[3] > 0 and extra[2].abs() > 0 and abs(float(extra[2])) < float(extra[3])


def test_the_sign_term_with_no_signed_row_is_zero_and_follows_the_fused_weight():
    cfg = LossConfig(unimodal=0.0, text=0.0, audio=0.0, vision=0.0, sign=1.0)
    out = _text_only([0.4, -0.7])
    got = joint_loss(out, torch.tensor([0.0, 0.0]), cfg)  # no label with a sign: the term is 0, the graph intact
    assert got.parts["sign"] == 0.0
    got.total.backward()
    assert out.score.grad is not None
    off = _text_only([-1.0, 1.0])
    none = joint_loss(off, torch.tensor([1.0, -1.0]), LossConfig(fused=0.0, unimodal=0.0, text=0.0, audio=0.0, vision=0.0, sign=1.0))
    assert float(none.total.detach()) == 0.0  # fused = 0: the fused score is not trained, sign term included
    assert none.parts["sign"] > 0  # still logged


def test_the_sign_term_is_off_by_default_and_checked():
    out = _text_only([0.3, -0.2])
    labels = torch.tensor([1.0, 1.0])
    assert "sign" not in joint_loss(out, labels, LossConfig(unimodal=0.0, text=0.0, audio=0.0, vision=0.0)).parts
    with pytest.raises(ValueError, match="sign"):
        LossConfig(sign=-1.0)

import torch

from mmsa.model.losses import info_nce


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

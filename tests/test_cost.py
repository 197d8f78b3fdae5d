from __future__ import annotations

import pytest
import torch

from monai_neurosql import SSIML1Loss, pairwise_cost
from tests.ssim_cases import CASES, DEVICES, monai_ssim, rand_images, structured_images


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,kw", CASES)
def test_pairwise_cost_equals_loss_per_pair(device, shape, kw):
    scale = kw.get("data_range", 1.0)
    x, y = (rand_images(5, *shape, seed=3) * scale).to(device), (rand_images(7, *shape, seed=4) * scale).to(device)
    loss = SSIML1Loss(spatial_dims=len(shape) - 1, reduction="none", **kw)
    cost = pairwise_cost(x, y, loss=loss)
    assert cost.shape == (5, 7) and cost.device == x.device and cost.dtype == torch.float32
    for i in range(5):  # the L1 half scales with data_range
        torch.testing.assert_close(cost[i], loss(x[i : i + 1].expand_as(y), y), rtol=0, atol=1e-5 * scale)
    ssim = 1 - pairwise_cost(x, y, loss=SSIML1Loss(len(shape) - 1, ssim_weight=1.0, **kw))
    for i in range(5):
        torch.testing.assert_close(ssim[i], monai_ssim(x[i : i + 1].expand_as(y), y, **kw).to(device), rtol=0,
                                   atol=1e-5)


def test_pairwise_cost_structured_images_and_chunking():
    x, y = structured_images(33, (28, 28), seed=5), structured_images(29, (28, 28), seed=6)
    full = pairwise_cost(x, y)
    # a tiny memory bound forces one image per chunk and one window per formula block: same values
    tiny = pairwise_cost(x, y, max_bytes=1)
    torch.testing.assert_close(full, tiny, rtol=0, atol=1e-6)
    loss = SSIML1Loss(2, reduction="none")
    torch.testing.assert_close(full[3], loss(x[3:4].expand_as(y), y), rtol=0, atol=1e-5)
    # smooth images give a wide range of costs and the diagonal of x vs x is zero
    self_cost = pairwise_cost(x, x)
    assert self_cost.diagonal().abs().max() < 1e-5
    assert self_cost.max() - self_cost[~torch.eye(33, dtype=torch.bool)].min() > 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_pairwise_l1_l2(device):
    x, y = rand_images(6, 2, 9, 11, seed=7).to(device), rand_images(4, 2, 9, 11, seed=8).to(device)
    diff = x[:, None] - y[None]
    torch.testing.assert_close(pairwise_cost(x, y, kind="l1"), diff.abs().flatten(2).mean(2), rtol=0, atol=1e-5)
    torch.testing.assert_close(pairwise_cost(x, y, kind="l2"), diff.pow(2).flatten(2).mean(2), rtol=0, atol=1e-5)
    # l1/l2 need no SSIM window, so images smaller than 11 px are fine
    assert pairwise_cost(x, x, kind="l2").diagonal().abs().max() < 1e-6


def test_pairwise_cost_errors():
    x = torch.rand(3, 1, 16, 16)
    with pytest.raises(ValueError, match="kind"):
        pairwise_cost(x, x, kind="ssim")
    with pytest.raises(ValueError, match="same C and spatial shape"):
        pairwise_cost(x, torch.rand(3, 1, 16, 17))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        pairwise_cost(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="max_bytes"):
        pairwise_cost(x, x, max_bytes=0)
    with pytest.raises(TypeError, match="SSIML1Loss"):
        pairwise_cost(x, x, loss=torch.nn.L1Loss())
    with pytest.raises(ValueError, match="spatial dims"):  # a 3D loss for 2D images
        pairwise_cost(x, x, loss=SSIML1Loss(3))

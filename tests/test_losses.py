from __future__ import annotations

import pytest
import torch

from monai_neurosql import SSIML1Loss
from tests.ssim_cases import CASES, monai_ssim, rand_images, structured_images


@pytest.mark.parametrize("shape,kw", CASES)
def test_loss_ssim_equals_monai(shape, kw):
    scale = kw.get("data_range", 1.0)
    x, y = rand_images(4, *shape, seed=1) * scale, rand_images(4, *shape, seed=2) * scale
    loss = SSIML1Loss(spatial_dims=len(shape) - 1, ssim_weight=1.0, reduction="none", **kw)
    torch.testing.assert_close(1 - loss(x, y), monai_ssim(x, y, **kw), rtol=0, atol=1e-5)


def test_loss_value_reductions_and_gradient():
    x, y = structured_images(5, (32, 32), seed=1), structured_images(5, (32, 32), seed=2)
    per_sample = SSIML1Loss(2, reduction="none")(x, y)
    expected = 0.5 * (1 - monai_ssim(x, y)) + 0.5 * (x - y).abs().flatten(1).mean(1)
    torch.testing.assert_close(per_sample, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(SSIML1Loss(2)(x, y), expected.mean(), rtol=0, atol=1e-5)
    torch.testing.assert_close(SSIML1Loss(2, reduction="sum")(x, y), expected.sum(), rtol=0, atol=5 * 1e-5)
    l1_only = SSIML1Loss(2, ssim_weight=0.0, reduction="none")(x, y)
    torch.testing.assert_close(l1_only, (x - y).abs().flatten(1).mean(1))
    assert SSIML1Loss(2)(x, x).abs().item() < 1e-6
    pred = x.clone().requires_grad_(True)
    SSIML1Loss(2)(pred, y).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_loss_errors():
    with pytest.raises(ValueError, match="same shape"):
        SSIML1Loss(2)(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 15))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        SSIML1Loss(2)(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="spatial dims"):
        SSIML1Loss(3)(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="reduction"):
        SSIML1Loss(2, reduction="median")
    with pytest.raises(ValueError, match="ssim_weight"):
        SSIML1Loss(2, ssim_weight=1.5)

from __future__ import annotations

import pytest
import torch

from monai_neurosql import SSIML1Loss, pairwise_cost
from monai_neurosql.ssim import SSIMWindow
from tests.ssim_cases import monai_ssim


def test_window_errors():
    with pytest.raises(ValueError, match="spatial_dims"):
        SSIMWindow(4)
    with pytest.raises(ValueError, match="kernel_type"):
        SSIMWindow(2, kernel_type="box")


def _float64_reference_ssim(x, y, win=11, sigma=1.5):
    """SSIM evaluated independently in float64 (full 2D window, conv), the formula of Wang et al. 2004."""
    x, y = x.double(), y.double()
    d = torch.arange(-(win // 2), win // 2 + 1, dtype=torch.float64)
    g = torch.exp(-((d / sigma) ** 2) / 2)
    g = g / g.sum()
    k = (g[:, None] * g[None, :])[None, None]
    conv = torch.nn.functional.conv2d
    mx, my = conv(x, k), conv(y, k)
    vx, vy = conv(x * x, k) - mx * mx, conv(y * y, k) - my * my
    cov = conv(x * y, k) - mx * my
    c1, c2 = 1e-4, 9e-4
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim.flatten(1).mean(1)


def test_accuracy_on_flat_bright_windows():
    """Flat bright regions are where float32 SSIM goes wrong (window sum and E[x^2] - mu^2 cancellation):
    ours stays within 1e-6 of a float64 evaluation, where MONAI's float32 metric drifts by about 1e-5 or more."""
    g = torch.Generator().manual_seed(0)
    base = torch.full((12, 1, 28, 28), 0.9)
    base[:, :, 8:20, 8:20] = torch.rand(12, 1, 12, 12, generator=g)
    x = (base + 0.002 * torch.rand(base.shape, generator=g)).clamp(0, 1)
    y = (base.flip(0) + 0.002 * torch.rand(base.shape, generator=g)).clamp(0, 1)
    reference = torch.stack([_float64_reference_ssim(x[i : i + 1].expand_as(y), y) for i in range(12)])
    ours_pairwise = 1 - pairwise_cost(x, y, loss=SSIML1Loss(2, ssim_weight=1.0)).double()
    ours_loss = torch.stack([1 - SSIML1Loss(2, ssim_weight=1.0, reduction="none")(x[i : i + 1].expand_as(y), y)
                             for i in range(12)]).double()
    torch.testing.assert_close(ours_pairwise, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_loss, reference, rtol=0, atol=1e-6)
    monai = torch.stack([monai_ssim(x[i : i + 1].expand_as(y), y) for i in range(12)]).double()
    assert (monai - reference).abs().max() > 1e-6  # the float32 metric is the less accurate one here

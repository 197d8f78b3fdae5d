from __future__ import annotations

import pytest
import torch
from monai.metrics import SSIMMetric

from monai_neurosql import SSIML1Loss, pairwise_cost
from monai_neurosql.ssim import SSIMWindow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _structured(n, size, seed=0):
    """Smooth random images (so SSIM varies over a wide range, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (img + 0.05 * torch.rand(n, 1, *size, generator=g)).clamp(0, 1)


def _monai_ssim(x, y, **kw):
    return SSIMMetric(spatial_dims=x.ndim - 2, reduction="none", **kw)(x, y).view(-1)


CASES = [
    # (shape of one image, SSIM keyword arguments)
    ((1, 28, 28), {}),
    ((1, 20, 24), {"win_size": 7, "kernel_sigma": 1.0}),
    ((3, 16, 16), {"kernel_type": "uniform", "win_size": 5}),
    ((1, 16, 16), {"data_range": 255.0}),
    ((1, 16, 16, 16), {}),
    ((2, 12, 14, 13), {"win_size": 5, "kernel_sigma": 0.8}),
]


@pytest.mark.parametrize("shape,kw", CASES)
def test_loss_ssim_equals_monai(shape, kw):
    scale = kw.get("data_range", 1.0)
    x, y = _rand(4, *shape, seed=1) * scale, _rand(4, *shape, seed=2) * scale
    loss = SSIML1Loss(spatial_dims=len(shape) - 1, ssim_weight=1.0, reduction="none", **kw)
    torch.testing.assert_close(1 - loss(x, y), _monai_ssim(x, y, **kw), rtol=0, atol=1e-5)


def test_loss_value_reductions_and_gradient():
    x, y = _structured(5, (32, 32), seed=1), _structured(5, (32, 32), seed=2)
    per_sample = SSIML1Loss(2, reduction="none")(x, y)
    expected = 0.5 * (1 - _monai_ssim(x, y)) + 0.5 * (x - y).abs().flatten(1).mean(1)
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
    with pytest.raises(ValueError, match="spatial_dims"):
        SSIMWindow(4)
    with pytest.raises(ValueError, match="kernel_type"):
        SSIMWindow(2, kernel_type="box")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,kw", CASES)
def test_pairwise_cost_equals_loss_per_pair(device, shape, kw):
    scale = kw.get("data_range", 1.0)
    x, y = (_rand(5, *shape, seed=3) * scale).to(device), (_rand(7, *shape, seed=4) * scale).to(device)
    cost = pairwise_cost(x, y, **kw)
    assert cost.shape == (5, 7) and cost.device == x.device and cost.dtype == torch.float32
    loss = SSIML1Loss(spatial_dims=len(shape) - 1, reduction="none", **kw)
    for i in range(5):  # the L1 half scales with data_range
        torch.testing.assert_close(cost[i], loss(x[i : i + 1].expand_as(y), y), rtol=0, atol=1e-5 * scale)
    ssim = 1 - pairwise_cost(x, y, ssim_weight=1.0, **kw)
    for i in range(5):
        torch.testing.assert_close(ssim[i], _monai_ssim(x[i : i + 1].expand_as(y), y, **kw).to(device), rtol=0,
                                   atol=1e-5)


def test_pairwise_cost_structured_images_and_chunking():
    x, y = _structured(33, (28, 28), seed=5), _structured(29, (28, 28), seed=6)
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
    x, y = _rand(6, 2, 9, 11, seed=7).to(device), _rand(4, 2, 9, 11, seed=8).to(device)
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
    with pytest.raises(ValueError, match="ssim_weight"):
        pairwise_cost(x, x, ssim_weight=-0.1)


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
    ours_pairwise = 1 - pairwise_cost(x, y, ssim_weight=1.0).double()
    ours_loss = torch.stack([1 - SSIML1Loss(2, ssim_weight=1.0, reduction="none")(x[i : i + 1].expand_as(y), y)
                             for i in range(12)]).double()
    torch.testing.assert_close(ours_pairwise, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_loss, reference, rtol=0, atol=1e-6)
    monai = torch.stack([_monai_ssim(x[i : i + 1].expand_as(y), y) for i in range(12)]).double()
    assert (monai - reference).abs().max() > 1e-6  # the float32 metric is the less accurate one here

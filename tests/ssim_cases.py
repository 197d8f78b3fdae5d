"""Images and SSIM settings shared by the SSIM, loss and cost tests."""

from __future__ import annotations

import torch
from monai.metrics import SSIMMetric

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rand_images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def structured_images(n, size, seed=0):
    """Smooth random images (so SSIM varies over a wide range, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (img + 0.05 * torch.rand(n, 1, *size, generator=g)).clamp(0, 1)


def monai_ssim(x, y, **kw):
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

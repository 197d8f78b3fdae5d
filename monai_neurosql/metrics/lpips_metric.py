"""LPIPS (Zhang et al. 2018) with the VGG backbone: the ``lpips`` package, VGG weights loaded locally."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..extras import require
from .features import load_pretrained_weights

__all__ = ["VGG16_WEIGHTS", "LPIPSMetric", "lpips_distance"]

#: torchvision's VGG-16 checkpoint file name (in the torch hub cache).
VGG16_WEIGHTS = "vgg16-397923af.pth"


class LPIPSMetric(nn.Module):
    """LPIPS distance (lower = more similar) with the VGG-16 backbone, as in the paper (appendix E).

    The ``lpips`` package ships its calibrated linear layers; the VGG-16 ImageNet weights are loaded from
    ``weights_path`` or the torch hub cache (``vgg16-397923af.pth``) and never downloaded: without them the
    constructor raises ``FileNotFoundError`` saying where to put them. Single-channel images are replicated to
    RGB at metric time; inputs in ``[0, 1]`` are mapped to ``[-1, 1]``. 2D images only.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        import torchvision

        lpips = require("lpips", "lpips", "LPIPSMetric")

        state = load_pretrained_weights(VGG16_WEIGHTS, weights_path, "LPIPS (VGG-16)")
        vgg = torchvision.models.vgg16(weights=None)
        vgg.load_state_dict(state)
        # pnet_rand=True builds the backbone without downloading; the real weights are copied in below
        self.model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        for slice_ in (self.model.net.slice1, self.model.net.slice2, self.model.net.slice3, self.model.net.slice4,
                       self.model.net.slice5):
            for name, layer in slice_.named_children():
                layer.load_state_dict(vgg.features[int(name)].state_dict())
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-pair LPIPS of ``x[i]`` and ``y[i]`` (``B x C x H x W`` in ``[0, 1]``): shape ``(B,)``."""
        if x.ndim != 4 or x.shape != y.shape:
            raise ValueError(f"LPIPS takes two 2D batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")

        def rgb(t: torch.Tensor) -> torch.Tensor:
            t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3]
            return 2.0 * t - 1.0

        return self.model(rgb(x.float()), rgb(y.float())).flatten()


@torch.no_grad()
def lpips_distance(real: torch.Tensor, fake: torch.Tensor, num_pairs: int = 50, seed: int = 0,
                   weights_path: str | os.PathLike | None = None) -> float:
    """Mean LPIPS over ``num_pairs`` fixed random (real, fake) pairs (the paper's protocol: 50 pairs)."""
    from .ssim_metrics import random_pairs

    i, j = random_pairs(len(real), len(fake), num_pairs, seed)
    return float(LPIPSMetric(weights_path)(real[i], fake[j]).mean())

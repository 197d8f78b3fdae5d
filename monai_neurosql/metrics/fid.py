"""Frechet distances: the paper's proxy-FID (fixed random features) and the Inception FID (pretrained weights)."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.metrics import FIDMetric

from .features import ProxyFeatureNet, extract_features, load_pretrained_weights

__all__ = ["proxy_fid", "inception_fid", "InceptionFeatures", "frechet_distance", "INCEPTION_WEIGHTS"]

#: torchvision's Inception-v3 checkpoint file name (in the torch hub cache).
INCEPTION_WEIGHTS = "inception_v3_google-0cc3c7bd.pth"


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two ``(N, F)`` feature sets (MONAI's ``FIDMetric``)."""
    if real_features.shape[0] < 2 or fake_features.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 samples per set.")
    # rounding can leave a tiny negative value for identical sets; a distance is >= 0
    return max(0.0, float(FIDMetric()(fake_features.double(), real_features.double())))


def _matched(real: torch.Tensor, fake: torch.Tensor, num_samples: int | None, seed: int) -> tuple:
    """Equal-size subsets (the paper matches sample counts, 2048 by default), drawn with a fixed seed."""
    n = min(len(real), len(fake)) if num_samples is None else min(num_samples, len(real), len(fake))
    g = torch.Generator().manual_seed(seed)
    return real[torch.randperm(len(real), generator=g)[:n]], fake[torch.randperm(len(fake), generator=g)[:n]]


def proxy_fid(
    real: torch.Tensor,
    fake: torch.Tensor,
    num_samples: int | None = 2048,
    seed: int = 0,
    feature_seed: int = 0,
    num_features: int = 128,
    batch_size: int = 256,
) -> float:
    """proxy-FID (paper appendix E): Frechet distance of :class:`ProxyFeatureNet` features (fixed random conv net,
    128-d), on equal numbers of real and generated images (``num_samples``, 2048 by default, subsampled with
    ``seed``). A coarse, reproducible indicator that needs no download; it is *not* the Inception FID.

    Args:
        real, fake: ``N x C x [SPATIAL]`` images in ``[0, 1]``.
        num_samples: matched sample count (``None``: the smaller set's size).
        seed: subsampling seed. feature_seed: the feature network's weight seed.
        num_features: feature size. batch_size: feature batch size.
    """
    real, fake = _matched(real, fake, num_samples, seed)
    net = ProxyFeatureNet(real.ndim - 2, real.shape[1], num_features, feature_seed)
    return frechet_distance(extract_features(net, real, batch_size), extract_features(net, fake, batch_size))


class InceptionFeatures(nn.Module):
    """Pool3 (2048-d) features of torchvision's Inception-v3 with its ImageNet weights (loaded, never downloaded).

    Single-channel images are replicated to RGB at metric time (paper appendix J), resized to 299x299 and
    normalized with the ImageNet statistics. 2D images only.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        import torchvision

        state = load_pretrained_weights(INCEPTION_WEIGHTS, weights_path, "FID (Inception-v3)")
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(state)
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"Inception features take 2D images (B, C, H, W), got shape {tuple(x.shape)}.")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


def inception_fid(
    real: torch.Tensor,
    fake: torch.Tensor,
    weights_path: str | os.PathLike | None = None,
    num_samples: int | None = 2048,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> float:
    """FID with Inception-v3 pool3 features. The weights come from ``weights_path`` or the torch hub cache
    (``inception_v3_google-0cc3c7bd.pth``); without them a ``FileNotFoundError`` says how to provide them."""
    features = InceptionFeatures(weights_path)
    if device is not None:
        features = features.to(device)
    real, fake = _matched(real, fake, num_samples, seed)
    return frechet_distance(extract_features(features, real, batch_size), extract_features(features, fake, batch_size))

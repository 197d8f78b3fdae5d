"""Frechet distances: the paper's proxy-FID (fixed random features), FID (the FID Inception network), and Frechet
distances in other pretrained features (named after the network, never "FID")."""

from __future__ import annotations

import os
import warnings

import torch
from monai.metrics import FIDMetric
from scipy.linalg import LinAlgWarning

from .features import ProxyFeatureNet, extract_features
from .pretrained_features import (
    FIDInceptionFeatures,
    ImageNetInceptionFeatures,
    MedicalNetResNet10Features,
    RadImageNetResNet50Features,
)

__all__ = ["fd_imagenet_inception", "fd_medicalnet", "fd_radimagenet", "fid", "frechet_distance", "proxy_fid"]


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two ``(N, F)`` feature sets (MONAI's ``FIDMetric``)."""
    if real_features.shape[0] < 2 or fake_features.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 samples per set.")
    with warnings.catch_warnings():
        # degenerate sets (a control of one repeated image, fewer images than features) have singular
        # covariances: scipy warns, and the distance is still the right finite number
        warnings.simplefilter("ignore", LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(FIDMetric()(fake_features.double(), real_features.double()))
    # rounding can leave a tiny negative value for identical sets; a distance is >= 0
    return max(0.0, value)


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
    ``seed``). A coarse, reproducible indicator that needs no download; it is *not* FID.

    Args:
        real, fake: ``N x C x [SPATIAL]`` images in ``[0, 1]``.
        num_samples: matched sample count (``None``: the smaller set's size).
        seed: subsampling seed. feature_seed: the feature network's weight seed.
        num_features: feature size. batch_size: feature batch size.
    """
    real, fake = _matched(real, fake, num_samples, seed)
    net = ProxyFeatureNet(real.ndim - 2, real.shape[1], num_features, feature_seed)
    return frechet_distance(extract_features(net, real, batch_size), extract_features(net, fake, batch_size))


def _pretrained_distance(features: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, num_samples: int | None,
                         seed: int, batch_size: int, device: torch.device | str | None) -> float:
    if device is not None:
        features = features.to(device)
    real, fake = _matched(real, fake, num_samples, seed)
    return frechet_distance(extract_features(features, real, batch_size), extract_features(features, fake, batch_size))


def fid(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike | None = None,
        num_samples: int | None = 2048, seed: int = 0, batch_size: int = 64,
        device: torch.device | str | None = None) -> float:
    """FID (Heusel et al. 2017): Frechet distance of the FID Inception network's pool3 features
    (:class:`~monai_neurosql.metrics.FIDInceptionFeatures`, pytorch-fid's ``pt_inception-2015-12-05`` weights from
    ``weights_path`` or the torch hub cache), on ``num_samples`` matched images (at least 2048 for a number
    comparable with published FIDs). 2D images in ``[0, 1]``.

    Raises:
        FileNotFoundError: the weights file is missing (the message says where to put it).
    """
    return _pretrained_distance(FIDInceptionFeatures(weights_path), real, fake, num_samples, seed, batch_size, device)


def fd_imagenet_inception(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike | None = None,
                          num_samples: int | None = 2048, seed: int = 0, batch_size: int = 64,
                          device: torch.device | str | None = None) -> float:
    """Frechet distance in torchvision's ImageNet Inception-v3 features (``inception_v3_google-0cc3c7bd.pth``).
    Not FID: other weights give other numbers; use :func:`fid` for a number comparable with the literature."""
    return _pretrained_distance(ImageNetInceptionFeatures(weights_path), real, fake, num_samples, seed, batch_size,
                                device)


def fd_radimagenet(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike | None = None,
                   num_samples: int | None = 2048, seed: int = 0, batch_size: int = 64,
                   device: torch.device | str | None = None) -> float:
    """Frechet distance in RadImageNet ResNet50 features, the 2D FID of MONAI's generative tutorials."""
    return _pretrained_distance(RadImageNetResNet50Features(weights_path), real, fake, num_samples, seed, batch_size,
                                device)


def fd_medicalnet(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike | None = None,
                  num_samples: int | None = 2048, seed: int = 0, batch_size: int = 8,
                  device: torch.device | str | None = None) -> float:
    """Frechet distance in MedicalNet ResNet-10 features of 3D volumes, the 3D FID of MONAI's generative
    tutorials."""
    return _pretrained_distance(MedicalNetResNet10Features(weights_path), real, fake, num_samples, seed, batch_size,
                                device)

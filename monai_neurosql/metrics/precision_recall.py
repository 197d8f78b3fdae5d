"""Precision and recall of generated images against real ones (k-NN manifold estimate, Kynkaanniemi et al. 2019)."""

from __future__ import annotations

import torch

__all__ = ["density_coverage", "precision_recall"]


def _knn_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start : start + chunk], features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _covered(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    out = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], centers)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3,
                     chunk: int = 1024) -> dict[str, float]:
    """Improved precision/recall in a feature space.

    The real manifold is the union of balls around real features with radius the distance to their ``k``-th
    nearest real neighbour; precision is the fraction of generated samples inside it (fidelity). Recall swaps
    the roles (coverage): a mode-collapsed generator has high precision and low recall.

    Args:
        real_features, fake_features: ``(N, F)`` features (e.g. :class:`ProxyFeatureNet` outputs).
        k: neighbourhood size. Default 3.
        chunk: rows per distance block (memory bound ``chunk x N``).

    Returns:
        ``{"precision": p, "recall": r}``.
    """
    if len(real_features) <= k or len(fake_features) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set.")
    real, fake = real_features.double(), fake_features.double()
    precision = _covered(fake, real, _knn_radii(real, k, chunk), chunk).double().mean().item()
    recall = _covered(real, fake, _knn_radii(fake, k, chunk), chunk).double().mean().item()
    return {"precision": precision, "recall": recall}


def density_coverage(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 5,
                     chunk: int = 1024) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), the outlier-robust successors of k-NN precision/recall.

    With ``r_i`` the distance from real feature ``x_i`` to its ``k``-th nearest real neighbour: density is the
    mean number of real balls ``B(x_i, r_i)`` a generated sample falls in, divided by ``k`` (about 1 for a
    generator that matches the real distribution, above 1 when samples crowd where real images are dense);
    coverage is the share of real balls that contain at least one generated sample (about ``1 - (1/2)^k``
    for two samples of one distribution, lower when modes are missed).

    Args:
        real_features, fake_features: ``(N, F)`` and ``(M, F)`` features.
        k: neighbourhood size. Default 5 (the paper's).
        chunk: rows per distance block.

    Returns:
        ``{"density": d, "coverage": c}``.
    """
    if len(real_features) <= k or len(fake_features) < 1:
        raise ValueError(f"density/coverage with k={k} needs more than {k} real samples and at least one fake.")
    real, fake = real_features.double(), fake_features.double()
    radii = _knn_radii(real, k, chunk)
    inside, nearest = [], []
    for start in range(0, len(fake), chunk):
        d = torch.cdist(fake[start : start + chunk], real)
        inside.append((d <= radii[None, :]).double().sum(1))
    for start in range(0, len(real), chunk):
        nearest.append(torch.cdist(real[start : start + chunk], fake).min(1).values)
    density = torch.cat(inside).mean().item() / k
    coverage = (torch.cat(nearest) <= radii).double().mean().item()
    return {"density": density, "coverage": coverage}

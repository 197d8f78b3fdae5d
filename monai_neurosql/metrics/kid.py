"""Kernel Inception Distance in any feature space: unbiased MMD^2 with a cubic polynomial kernel, and its SE."""

from __future__ import annotations

import math

import torch

__all__ = ["kernel_distance"]


def kernel_distance(real_features: torch.Tensor, fake_features: torch.Tensor, degree: int = 3,
                    coef: float = 1.0) -> dict[str, float]:
    """KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD between two feature sets under the
    polynomial kernel ``k(x, y) = (x . y / F + coef) ** degree``, with its jackknife standard error.

    The estimate uses all ``m`` real and ``n`` fake features at once (no subsets): for the within-set terms the
    diagonal is excluded, so two samples of one distribution give 0 in expectation (and small negative values
    happen). The standard error is the two-sample delete-one jackknife (Arvesen 1969), computed in
    ``O((m + n)^2)`` from the kernel row sums: it says how far the value would move with other images of the same
    two distributions, so a difference between two models smaller than about twice their SEs is not resolved.

    Args:
        real_features, fake_features: ``(m, F)`` and ``(n, F)`` features (e.g. a domain encoder's).
        degree, coef: kernel parameters; the defaults are KID's.

    Raises:
        ValueError: fewer than 3 samples in a set, or feature sizes differ.

    Returns:
        ``{"kid": value, "kid_se": standard error}``.

    Example::

        kernel_distance(torch.randn(200, 64), torch.randn(200, 64) + 0.5)["kid"]   # > 0
    """
    x, y = real_features.double(), fake_features.double()
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (m, F) and (n, F), got {tuple(x.shape)} and {tuple(y.shape)}.")
    m, n = len(x), len(y)
    if m < 3 or n < 3:
        raise ValueError(f"KID needs at least 3 samples per set for its estimate and standard error, got {m}, {n}.")
    dim = x.shape[1]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / dim + coef) ** degree

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    kxx.fill_diagonal_(0.0)
    kyy.fill_diagonal_(0.0)
    sxx, syy, sxy = kxx.sum(), kyy.sum(), kxy.sum()
    value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # leave-one-out estimates: drop real sample i (then fake sample j)
    loo_x = (sxx - 2 * kxx.sum(1)) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - kxy.sum(1)) / ((m - 1) * n)
    loo_y = sxx / (m * (m - 1)) + (syy - 2 * kyy.sum(1)) / ((n - 1) * (n - 2)) - 2 * (sxy - kxy.sum(0)) / (m * (n - 1))
    variance = (m - 1) / m * ((loo_x - loo_x.mean()) ** 2).sum() + (n - 1) / n * ((loo_y - loo_y.mean()) ** 2).sum()
    return {"kid": float(value), "kid_se": math.sqrt(max(float(variance), 0.0))}

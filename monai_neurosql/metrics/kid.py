"""Kernel Inception Distance in any feature space: unbiased MMD^2 with a cubic polynomial kernel, and its SE."""

from __future__ import annotations

import math

import torch

__all__ = ["kernel_distance", "kid_difference"]


def _polynomial_kernel(a: torch.Tensor, b: torch.Tensor, degree: int, coef: float) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + coef) ** degree


def _check_features(*features: torch.Tensor) -> None:
    dims = {f.shape[1] if f.ndim == 2 else None for f in features}
    if len(dims) != 1 or None in dims:
        raise ValueError(f"features must all be (n, F) with one F, got {[tuple(f.shape) for f in features]}.")
    if min(len(f) for f in features) < 3:
        raise ValueError(f"KID needs at least 3 samples per set for its estimate and standard error, got "
                         f"{[len(f) for f in features]}.")


def kernel_distance(real_features: torch.Tensor, fake_features: torch.Tensor, degree: int = 3,
                    coef: float = 1.0) -> dict[str, float]:
    """KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD between two feature sets under the
    polynomial kernel ``k(x, y) = (x . y / F + coef) ** degree``, with its jackknife standard error.

    The estimate uses all ``m`` real and ``n`` fake features at once (no subsets): for the within-set terms the
    diagonal is excluded, so two samples of one distribution give 0 in expectation (and small negative values
    happen). The standard error is the two-sample delete-one jackknife (Arvesen 1969), computed in
    ``O((m + n)^2)`` from the kernel row sums: it says how far the value would move with other images of the same
    two distributions. To compare two models scored against the same real set use :func:`kid_difference`, whose
    SE is that of the difference (the shared real set's noise cancels in part).

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
    _check_features(x, y)
    m, n = len(x), len(y)
    kxx, kyy, kxy = (_polynomial_kernel(a, b, degree, coef) for a, b in ((x, x), (y, y), (x, y)))
    kxx.fill_diagonal_(0.0)
    kyy.fill_diagonal_(0.0)
    sxx, syy, sxy = kxx.sum(), kyy.sum(), kxy.sum()
    value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # leave-one-out estimates: drop real sample i (then fake sample j)
    loo_x = (sxx - 2 * kxx.sum(1)) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - kxy.sum(1)) / ((m - 1) * n)
    loo_y = sxx / (m * (m - 1)) + (syy - 2 * kyy.sum(1)) / ((n - 1) * (n - 2)) - 2 * (sxy - kxy.sum(0)) / (m * (n - 1))
    return {"kid": float(value), "kid_se": _jackknife_se(loo_x, loo_y)}


def _jackknife_se(*leave_one_out: torch.Tensor) -> float:
    """Delete-one jackknife standard error of a statistic of several independent samples, from its leave-one-out
    values per sample (Arvesen 1969): ``sqrt(sum_g (n_g - 1) / n_g * sum_i (loo_gi - mean_g)^2)``."""
    variance = sum((len(v) - 1) / len(v) * ((v - v.mean()) ** 2).sum() for v in leave_one_out)
    return math.sqrt(max(float(variance), 0.0))


def kid_difference(real_features: torch.Tensor, features_a: torch.Tensor, features_b: torch.Tensor,
                   degree: int = 3, coef: float = 1.0) -> dict[str, float]:
    """``KID(real, a) - KID(real, b)`` for two models scored against the same real set, with the standard error of
    the difference itself.

    Two KIDs against one reference are correlated: the reference's self-similarity term is the same in both and
    cancels in the difference, and an unlucky reference set moves both values the same way. Subtracting two KIDs
    and combining their SEs as if independent (``sqrt(se_a^2 + se_b^2)``) therefore overstates the noise of the
    comparison, most where the reference set is small or diverse (the demo brains: one KID's SE is about 30, the
    spread of a paired difference a few units). Here the difference is estimated directly,
    ``[k_aa - 2 k_ar] - [k_bb - 2 k_br]`` (unbiased within-set means, diagonal excluded), and its SE is the
    three-sample delete-one jackknife over the real, ``a`` and ``b`` sets.

    Args:
        real_features: ``(m, F)`` features of the shared real (reference) set.
        features_a, features_b: ``(n_a, F)`` and ``(n_b, F)`` features of the two generated sets.
        degree, coef: kernel parameters (KID's defaults).

    Raises:
        ValueError: fewer than 3 samples in a set, or feature sizes differ.

    Returns:
        ``{"difference": KID(real, a) - KID(real, b), "se": its standard error, "kid_a": KID(real, a),
        "kid_b": KID(real, b)}`` (the two KIDs as :func:`kernel_distance` gives them, from the same kernel sums);
        ``difference < -2 se`` means ``a`` is resolved as closer to the real set than ``b``.

    Example::

        kid_difference(real, better, worse)["difference"]   # < 0
    """
    r, a, b = real_features.double(), features_a.double(), features_b.double()
    _check_features(r, a, b)
    m = len(r)

    def side(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model's ``k_ff`` mean minus twice its ``k_fr`` mean, and the leave-one-out values of that term for
        dropping each of its samples and each real sample."""
        n = len(f)
        kff, kfr = _polynomial_kernel(f, f, degree, coef), _polynomial_kernel(f, r, degree, coef)
        kff.fill_diagonal_(0.0)
        sff, sfr = kff.sum(), kfr.sum()
        value = sff / (n * (n - 1)) - 2 * sfr / (n * m)
        loo_f = (sff - 2 * kff.sum(1)) / ((n - 1) * (n - 2)) - 2 * (sfr - kfr.sum(1)) / ((n - 1) * m)
        loo_r = sff / (n * (n - 1)) - 2 * (sfr - kfr.sum(0)) / (n * (m - 1))
        return value, loo_f, loo_r

    value_a, loo_a, loo_ra = side(a)
    value_b, loo_b, loo_rb = side(b)
    difference = value_a - value_b
    loo_a, loo_b = loo_a - value_b, value_a - loo_b  # the difference without sample i of a (then of b)
    krr = _polynomial_kernel(r, r, degree, coef).fill_diagonal_(0.0).sum() / (m * (m - 1))  # cancels in the difference
    return {"difference": float(difference), "se": _jackknife_se(loo_a, loo_b, loo_ra - loo_rb),
            "kid_a": float(krr + value_a), "kid_b": float(krr + value_b)}

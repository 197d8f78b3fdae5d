"""The smallest sample count at which each distribution metric means something, and how a table says so."""

from __future__ import annotations

import math

__all__ = ["MIN_SAMPLES", "below_minimum", "minimum_samples"]

#: Minimum number of images per set (real and generated, matched) for each metric.
#:
#: - ``fid``: Inception FID, 2048-d features: its authors ask for at least 2048 (below, the covariance is
#:   singular and the bias dominates differences between models).
#: - ``proxy_fid``: the paper's 128-d proxy features; ``domain_fid``: the domain encoder's features (64-d by
#:   default). A Frechet distance needs a full-rank covariance and its bias falls as ``F / N``: we ask for
#:   ``4 F`` images (512 for 128-d, 256 for 64-d), the count at which the held-out-vs-held-out floor of the
#:   domain FID measured in docs/benchmarks.md stays below the blurred control by a wide margin.
#: - ``kid``: unbiased at any size and reported with its standard error; 50 images per set keep the SE below the
#:   gap between real images and the negative controls in our measurements (KID is the metric for small sets).
#: - ``precision_recall`` (k = 3) and ``density_coverage`` (k = 5): k-NN manifold estimates; with fewer than 100
#:   images the radii are so coarse that held-out real images get recall 1.0 and any generator precision ~1.
#: - ``memorization``: the audit's four thresholds (pixel, two low-pass scales, domain features) are each the
#:   1.25% quantile of held-out match ratios (5% in all); 400 held-out images put 5 below each.
MIN_SAMPLES: dict[str, int] = {
    "fid": 2048,
    "proxy_fid": 512,
    "kid": 50,
    "precision_recall": 100,
    "density_coverage": 100,
    "memorization": 400,
}


def minimum_samples(metric: str, feature_size: int | None = None) -> int:
    """The minimum matched sample count of ``metric``; ``"domain_fid"`` (and any Frechet distance on
    ``feature_size``-d features) needs ``4 * feature_size``.

    Raises:
        ValueError: unknown metric, or ``domain_fid`` without ``feature_size``.
    """
    if metric == "domain_fid":
        if not feature_size:
            raise ValueError("the minimum count of domain_fid depends on the feature size: pass feature_size.")
        return 4 * int(feature_size)
    if metric not in MIN_SAMPLES:
        raise ValueError(f"unknown metric {metric!r}; known: domain_fid, {', '.join(MIN_SAMPLES)}.")
    return MIN_SAMPLES[metric]


def below_minimum(value: float | str | None, count: int, minimum: int) -> float | str:
    """``value`` when ``count >= minimum``; otherwise the text a table prints instead of a number,
    ``"n<min (64<256)"``. NaN stays NaN."""
    if count >= minimum:
        return value if value is not None else math.nan
    return f"n<min ({count}<{minimum})"

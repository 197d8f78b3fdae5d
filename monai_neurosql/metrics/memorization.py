"""Memorization audit of synthetic images: are they (possibly blurred) near-copies of training images?"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .controls import blur
from .sample_counts import MIN_SAMPLES

__all__ = ["MemorizationAudit", "memorization_audit", "nearest_neighbours"]


def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, block: int = 512,
                       cost_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the cost and index of its nearest reference under
    :func:`~monai_neurosql.pairwise_cost` (SSIM+L1 by default), computed in blocks of ``block`` queries."""
    from .. import pairwise_cost

    costs, index = [], []
    for start in range(0, len(queries), block):
        c = pairwise_cost(queries[start : start + block], references, **dict(cost_kwargs or {}))
        value, idx = c.min(dim=1)
        costs.append(value)
        index.append(idx)
    return torch.cat(costs), torch.cat(index)


def _two_nearest(distances: Callable[[torch.Tensor], torch.Tensor], queries: torch.Tensor,
                 block: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest and second-nearest reference distance and the nearest index, ``distances(query block) -> (b, R)``."""
    first, second, index = [], [], []
    for start in range(0, len(queries), block):
        values, idx = distances(queries[start : start + block]).topk(2, dim=1, largest=False)
        first.append(values[:, 0])
        second.append(values[:, 1])
        index.append(idx[:, 0])
    return torch.cat(first), torch.cat(second), torch.cat(index)


class MemorizationAudit:
    """Flag synthetic images that sit closer to a training image than new real images do, in up to three spaces.

    In each space an image's *match ratio* is the distance to its nearest training image divided by the distance
    to the second nearest: a copy of one training image is much closer to it than to any other (ratio near 0),
    while a new image, and also a featureless one (the mean image, a blurry average, which is close to many
    training images at once), sits about as far from its nearest as from its second nearest (ratio near 1). The
    threshold is the ``quantile`` (default 5%) of the ratio over held-out real images (images the model never saw),
    computed once here. A synthetic image is a *near-copy* when its ratio is below the threshold in any space:

    - ``pixel``: NeuroSQL's SSIM+L1 cost (:func:`~monai_neurosql.pairwise_cost`);
    - ``lowpass``: mean squared difference after blurring *both* sides with ``lowpass_sigma`` (default 1/8 of
      the smallest spatial size), so a blurred reproduction of a training image, far from it in pixel space, is
      matched to the blurred original as a sharp copy is;
    - ``domain``: Euclidean distance in ``feature_net`` features (the domain encoder), when given.

    A model that generalizes flags about ``quantile`` of its samples per space (at most ``3 * quantile`` in the
    union; compare with the audit of unseen real images, the report's floor); a memorizing one flags far more.

    Args:
        train, heldout: ``N x C x [SPATIAL]`` images in ``[0, 1]``.
        quantile: held-out quantile of the threshold, in ``(0, 1)``.
        cost_kwargs: ``pairwise_cost`` options for the pixel space.
        feature_net: features for the domain space (e.g. a trained :class:`DomainEncoder`).
        lowpass_sigma: blur of the low-pass space (pixels).
        min_heldout: the fewest held-out images accepted (default 100: 5 below a 5% threshold).

    Raises:
        ValueError: ``quantile`` outside ``(0, 1)``, or fewer than ``min_heldout`` held-out images.

    Example::

        audit = MemorizationAudit(train, heldout, feature_net=encoder)
        audit(samples)["near_copy_share"]
    """

    def __init__(
        self,
        train: torch.Tensor,
        heldout: torch.Tensor,
        quantile: float = 0.05,
        cost_kwargs: Mapping[str, Any] | None = None,
        feature_net: Callable[[torch.Tensor], torch.Tensor] | None = None,
        lowpass_sigma: float | None = None,
        min_heldout: int = MIN_SAMPLES["memorization"],
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}.")
        if len(heldout) < min_heldout:
            raise ValueError(f"the memorization threshold needs at least {min_heldout} held-out images (the "
                             f"{quantile:g} quantile of their distances), got {len(heldout)}; pass more held-out "
                             "images or lower min_heldout knowingly.")
        self.train, self.quantile, self.feature_net = train, quantile, feature_net
        self.cost_kwargs = dict(cost_kwargs or {})
        self.sigma = lowpass_sigma if lowpass_sigma is not None else min(train.shape[2:]) / 8.0
        self.low_train = blur(train, self.sigma)
        self.train_features = None
        if feature_net is not None:
            from .features import extract_features

            self.train_features = extract_features(feature_net, train)
        self.heldout = self._distances(heldout)
        self.thresholds = {name: float(torch.quantile(self._ratio(d), quantile)) for name, d in self.heldout.items()}

    @staticmethod
    def _ratio(distances: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        first, second, _ = distances
        return first.double() / second.double().clamp_min(1e-12)

    def _distances(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        from .. import pairwise_cost

        out = {"pixel": _two_nearest(lambda q: pairwise_cost(q, self.train, **self.cost_kwargs), images),
               "lowpass": _two_nearest(lambda q: pairwise_cost(q, self.low_train, kind="l2"), blur(images, self.sigma))}
        if self.feature_net is not None:
            from .features import extract_features

            features = extract_features(self.feature_net, images)
            out["domain"] = _two_nearest(lambda q: torch.cdist(q, self.train_features), features)
        return out

    def __call__(self, synthetic: torch.Tensor, png_path: str | os.PathLike | None = None,
                 worst_k: int = 16) -> dict[str, Any]:
        """Audit ``synthetic``; with ``png_path``, save the ``worst_k`` closest pairs (smallest distance relative
        to its threshold): synthetic images on the top row, their nearest training images below.

        Returns:
            ``{"near_copy_share", "share_<space>", "threshold_<space>" (match-ratio thresholds),
            "median_ratio_synthetic_<space>", "median_ratio_heldout_<space>", "nn_index" (N, nearest training image
            in pixel space), "score" (N, smallest ratio / threshold over spaces: below 1 = flagged), "flagged"
            (N bool), "spaces", "png"}``.
        """
        spaces = self._distances(synthetic)
        result: dict[str, Any] = {"spaces": tuple(spaces), "png": None}
        scores = []
        for name, distances in spaces.items():
            ratio, threshold = self._ratio(distances), self.thresholds[name]
            result[f"threshold_{name}"] = threshold
            result[f"share_{name}"] = float((ratio < threshold).double().mean())
            result[f"median_ratio_synthetic_{name}"] = float(ratio.median())
            result[f"median_ratio_heldout_{name}"] = float(self._ratio(self.heldout[name]).median())
            scores.append(ratio / max(threshold, 1e-12))
        stacked = torch.stack(scores)
        score = stacked.min(0).values
        result.update(score=score, flagged=score < 1.0, nn_index=spaces["pixel"][2])
        result["near_copy_share"] = float(result["flagged"].double().mean())
        if png_path is not None and worst_k > 0:
            from ..visualize import save_grid_png

            worst = score.argsort()[:worst_k]
            nearest = torch.stack([d[2] for d in spaces.values()])[stacked.argmin(0)[worst], worst]
            grid = torch.cat([synthetic[worst].cpu(), self.train[nearest].cpu()])
            result["png"] = save_grid_png(grid, png_path, nrow=len(worst), scale=2)
        return result


def memorization_audit(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    quantile: float = 0.05,
    worst_k: int = 16,
    png_path: str | os.PathLike | None = None,
    cost_kwargs: Mapping[str, Any] | None = None,
    feature_net: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lowpass_sigma: float | None = None,
    min_heldout: int = MIN_SAMPLES["memorization"],
) -> dict[str, Any]:
    """One-shot :class:`MemorizationAudit` of ``synthetic`` against ``train`` with thresholds from ``heldout``;
    arguments and result as there."""
    audit = MemorizationAudit(train, heldout, quantile, cost_kwargs, feature_net, lowpass_sigma, min_heldout)
    return audit(synthetic, png_path=png_path, worst_k=worst_k)

"""Memorization audit of synthetic images: are they (possibly blurred) near-copies of training images?"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..cost import pairwise_cost
from ..utils import read_cache, write_cache
from ..visualize import save_grid_png
from .controls import blur

logger = logging.getLogger(__name__)

__all__ = ["MemorizationAudit", "audit_minimum", "memorization_audit", "nearest_neighbours"]


def audit_minimum(quantile: float = 0.05, num_spaces: int = 4) -> int:
    """Held-out images the audit needs: 5 below each space's threshold (``quantile / num_spaces``)."""
    return math.ceil(5 * num_spaces / quantile - 1e-9)


def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, block: int = 512,
                       cost_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the cost and index of its nearest reference under
    :func:`~monai_neurosql.pairwise_cost` (SSIM+L1 by default), computed in blocks of ``block`` queries."""

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
    """Flag synthetic images that reproduce a training image (sharp or blurred) more closely than new real images
    come to any training image.

    In each space an image's *match ratio* is the distance to its nearest training image divided by the distance
    to the second nearest: a copy of one training image is much closer to it than to any other (ratio near 0),
    while a new image, and also a featureless one (the mean image, a blurry average, which is close to many
    training images at once), sits about as far from its nearest as from its second nearest (ratio near 1). The
    spaces:

    - ``pixel``: NeuroSQL's SSIM+L1 cost (:func:`~monai_neurosql.pairwise_cost`) to the training images;
    - ``lowpass_fine`` and ``lowpass_coarse``: mean squared difference to the training images blurred with
      ``lowpass_sigmas`` (default 1/16 and 1/8 of the smallest spatial size): a reproduction blurred by about
      that much matches its blurred original almost exactly. The thresholds come from held-out images blurred
      alike, so a blurry but new image is judged against blurry new real images;
    - ``domain``: Euclidean distance in ``feature_net`` features (the domain encoder), when given.

    Each space's threshold is the ``quantile / number of spaces`` quantile of the match ratio over held-out real
    images (images the model never saw), computed once here; an image below it in any space is a *near-copy*. So a
    model that generalizes flags about ``quantile`` (5%) of its samples in all (compare with the audit of unseen
    real images, the report's floor) and a memorizing one far more.

    Args:
        train, heldout: ``N x C x [SPATIAL]`` images in ``[0, 1]`` (``train`` at least 2).
        quantile: the share of new real images allowed below the thresholds, in ``(0, 1)``.
        cost_kwargs: ``pairwise_cost`` options for the pixel space.
        feature_net: features for the domain space (e.g. a trained :class:`DomainEncoder`).
        lowpass_sigmas: blurs of the low-pass spaces (pixels).
        min_heldout: the fewest held-out images accepted; default ``ceil(5 * spaces / quantile)``, 5 below each
            threshold (400 with a domain encoder at 5%, 300 without).
        cache_dir: a folder where the held-out calibration (each space's held-out distances, and the training
            features) is kept, under a digest of everything it depends on (the training and held-out images, the
            settings, the feature network's weights, the audit's code and torch's version), and reused by any later
            audit of the same: the calibration is the audit's dearest part (about 4 minutes for 504 held-out and
            1000 training images at 128 px on one CPU thread), and a benchmark run builds one audit per cell.
            A damaged file is computed again, with a warning. Default ``None``: no cache.

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
        lowpass_sigmas: tuple[float, float] | None = None,
        min_heldout: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}.")
        if len(train) < 2:
            raise ValueError(f"the audit needs at least 2 training images, got {len(train)}.")
        num_spaces = 4 if feature_net is not None else 3
        minimum = min_heldout if min_heldout is not None else audit_minimum(quantile, num_spaces)
        if len(heldout) < minimum:
            raise ValueError(f"the memorization thresholds need at least {minimum} held-out images (5 below each of "
                             f"{num_spaces} thresholds at {quantile:g}), got {len(heldout)}; pass more held-out images "
                             "or lower min_heldout knowingly.")
        self.train, self.quantile, self.feature_net = train, quantile, feature_net
        self.cost_kwargs = dict(cost_kwargs or {})
        size = min(train.shape[2:])
        self.sigmas = dict(zip(("lowpass_fine", "lowpass_coarse"), lowpass_sigmas or (size / 16.0, size / 8.0)))
        self.low_train = {name: blur(train, sigma) for name, sigma in self.sigmas.items()}
        path = Path(cache_dir) / f"audit_{self._digest(heldout)}.pt" if cache_dir is not None else None
        cached = None if path is None else read_cache(
            path, ("train_features", "heldout"), logger,
            f"memorization audit: held-out calibration reused from {path}", "calibrating the memorization audit again")
        if cached is not None:
            self.train_features, self.heldout = cached["train_features"], cached["heldout"]
        else:
            self.train_features = None
            if feature_net is not None:
                from .features import extract_features

                self.train_features = extract_features(feature_net, train)
            self.heldout = self._distances(heldout, blur_queries=True)
            if path is not None:
                write_cache(path, {"train_features": self.train_features, "heldout": self.heldout})
        level = quantile / num_spaces
        self.thresholds = {name: float(torch.quantile(self._ratio(d), level)) for name, d in self.heldout.items()}

    def _digest(self, heldout: torch.Tensor) -> str:
        """A digest of what the calibration depends on (see ``cache_dir``)."""
        digest = hashlib.sha256(repr((torch.__version__, self.quantile, sorted(self.cost_kwargs.items()),
                                      sorted(self.sigmas.items()))).encode())
        for module in ("monai_neurosql.metrics.memorization", "monai_neurosql.cost", "monai_neurosql.ssim",
                       "monai_neurosql.metrics.controls", "monai_neurosql.metrics.features"):
            digest.update(Path(importlib.import_module(module).__file__).read_bytes())
        tensors = [self.train, heldout]
        if self.feature_net is not None:
            if not isinstance(self.feature_net, torch.nn.Module):
                raise TypeError("cache_dir needs the feature network to be a torch module (its weights go into the "
                                f"cache key), got {type(self.feature_net).__name__}.")
            digest.update(repr(type(self.feature_net)).encode())
            tensors += list(self.feature_net.state_dict().values())
        for tensor in tensors:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:20]

    @staticmethod
    def _ratio(distances: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        first, second, _ = distances
        return first.double() / second.double().clamp_min(1e-12)

    def _distances(self, images: torch.Tensor, blur_queries: bool = False
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Nearest/second-nearest distances per space; ``blur_queries`` blurs the queries like the low-pass
        references (for the held-out calibration)."""
    
        out = {"pixel": _two_nearest(lambda q: pairwise_cost(q, self.train, **self.cost_kwargs), images)}
        for name, sigma in self.sigmas.items():
            queries = blur(images, sigma) if blur_queries else images.float()
            out[name] = _two_nearest(lambda q, ref=self.low_train[name]: pairwise_cost(q, ref, kind="l2"), queries)
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
    lowpass_sigmas: tuple[float, float] | None = None,
    min_heldout: int | None = None,
) -> dict[str, Any]:
    """One-shot :class:`MemorizationAudit` of ``synthetic`` against ``train`` with thresholds from ``heldout``;
    arguments and result as there."""
    audit = MemorizationAudit(train, heldout, quantile, cost_kwargs, feature_net, lowpass_sigmas, min_heldout)
    return audit(synthetic, png_path=png_path, worst_k=worst_k)

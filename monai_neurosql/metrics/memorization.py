"""Memorization audit of synthetic images: are they near-copies of training images?"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..cost import pairwise_cost
from ..visualize import save_grid_png

__all__ = ["nearest_neighbours", "memorization_audit"]


def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, block: int = 512,
                       cost_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the cost and index of its nearest reference under :func:`pairwise_cost`
    (SSIM+L1 by default), computed in blocks of ``block`` queries."""
    costs, index = [], []
    for start in range(0, len(queries), block):
        c = pairwise_cost(queries[start : start + block], references, **dict(cost_kwargs or {}))
        value, idx = c.min(dim=1)
        costs.append(value)
        index.append(idx)
    return torch.cat(costs), torch.cat(index)


def memorization_audit(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    quantile: float = 0.05,
    worst_k: int = 16,
    png_path: str | os.PathLike | None = None,
    cost_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Flag synthetic images that sit closer to a training image than new real images do.

    Each synthetic image's nearest training image (SSIM+L1 cost) is compared with the same distance for held-out
    real images (images the model never saw): a synthetic image is a *near-copy* when its nearest-training cost
    is below the ``quantile`` (default 5%) of the held-out costs, i.e. closer to a training image than 95% of
    genuinely new real images are. A model that generalizes flags about ``quantile`` of its samples; a
    memorizing one flags far more. The ``worst_k`` closest pairs are saved as a PNG (synthetic on the top row,
    its nearest training image below).

    Returns:
        ``{"near_copy_share", "threshold", "synthetic_nn_cost" (N,), "synthetic_nn_index" (N,),
        "heldout_nn_cost" (M,), "median_synthetic", "median_heldout", "png"}``.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}.")
    syn_cost, syn_index = nearest_neighbours(synthetic, train, cost_kwargs=cost_kwargs)
    held_cost, _ = nearest_neighbours(heldout, train, cost_kwargs=cost_kwargs)
    threshold = float(torch.quantile(held_cost.double(), quantile))
    result: dict[str, Any] = {
        "near_copy_share": float((syn_cost < threshold).double().mean()),
        "threshold": threshold,
        "synthetic_nn_cost": syn_cost,
        "synthetic_nn_index": syn_index,
        "heldout_nn_cost": held_cost,
        "median_synthetic": float(syn_cost.median()),
        "median_heldout": float(held_cost.median()),
        "png": None,
    }
    if png_path is not None and worst_k > 0:
        worst = syn_cost.argsort()[:worst_k]
        grid = torch.cat([synthetic[worst].cpu(), train[syn_index[worst]].cpu()])
        result["png"] = save_grid_png(grid, png_path, nrow=len(worst), scale=2)
    return result

"""Tiny synthetic data sets shared by the tests."""

from __future__ import annotations

import torch
from monai.data import Dataset


def shapes(n: int, size: int = 16, seed: int = 0, depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of discs (label 0) and squares (label 1) of random position, size and brightness.

    The brightness (0.5 to 1) makes every image distinct, so optimal assignments have no exact ties.

    With ``depth`` the shapes are balls and cubes in ``depth x size x size`` volumes.
    """
    g = torch.Generator().manual_seed(seed)
    axes = [torch.arange(size), torch.arange(size)] if depth is None else [torch.arange(depth)] + [torch.arange(size)] * 2
    grids = torch.meshgrid(*axes, indexing="ij")
    images, labels = [], []
    for _ in range(n):
        label = int(torch.randint(0, 2, (1,), generator=g))
        radius = int(torch.randint(2, 4, (1,), generator=g))
        center = [int(torch.randint(4, s - 4, (1,), generator=g)) for s in grids[0].shape]
        if label == 0:
            img = sum((grid - c) ** 2 for grid, c in zip(grids, center)) <= radius**2
        else:
            img = torch.stack([(grid - c).abs() <= radius for grid, c in zip(grids, center)]).all(0)
        brightness = 0.5 + 0.5 * float(torch.rand((), generator=g))
        images.append(brightness * img.float()[None])
        labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def indexed_dataset(images: torch.Tensor, labels: torch.Tensor | None = None) -> Dataset:
    """A MONAI dataset of dicts ``{"image", "index"[, "label"]}``."""
    items = []
    for i in range(images.shape[0]):
        item = {"image": images[i], "index": i}
        if labels is not None:
            item["label"] = int(labels[i])
        items.append(item)
    return Dataset(items)

"""The assignment images: every training image once, from a loader, in dataset-index order."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.utils import convert_to_tensor

from ..distributed import sum_over_ranks, world

__all__ = ["collect_images"]


def collect_images(
    loader: Iterable, n: int, image_key: str = "image", index_key: str = "index", device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``loader`` with their dataset indices: ``(images, rows)``, sorted by index, duplicates removed.

    Outside ``torch.distributed`` the loader must yield every index ``0..n-1`` exactly once. Under DDP each rank
    passes its shard (e.g. a ``DistributedSampler`` without shuffling, which may repeat a few indices to even
    out the shards); the union over ranks must cover every index.

    Raises:
        ValueError: indices outside ``[0, n)``, or (single process) missing or repeated indices.
    """
    chunks, indices = [], []
    for batch in loader:
        x = batch[image_key]
        x = convert_to_tensor(x, track_meta=False, wrap_sequence=True).float()
        index = torch.as_tensor(batch[index_key]).long().reshape(-1)
        if index.numel() and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"assignment loader gave index {index.max().item()} outside [0, {n - 1}].")
        chunks.append(x.to(device) if device is not None else x)
        indices.append(index)
    if not chunks:
        raise ValueError("the assignment loader yielded no images.")
    images, index = torch.cat(chunks), torch.cat(indices)
    distributed, _, _ = world()
    counts = torch.bincount(index, minlength=n)
    if distributed:
        missing = int((sum_over_ranks(counts) == 0).sum())
        if missing:
            raise ValueError(f"the ranks' assignment loaders together miss {missing} of the {n} training images.")
    elif not bool((counts == 1).all()):
        raise ValueError(
            f"the assignment loader must yield each of the {n} training images exactly once (no shuffling-with-"
            f"replacement, no drop_last); {int((counts == 0).sum())} were missing and {int((counts > 1).sum())} "
            "repeated."
        )
    order = torch.argsort(index, stable=True)
    index, images = index[order], images[order.to(images.device)]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return images[keep.to(images.device)], index[keep]

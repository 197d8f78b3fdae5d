"""Data loaders with the properties NeuroSQL training relies on."""

from __future__ import annotations

import torch.distributed as dist
from monai.data import DataLoader
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["assignment_loader", "train_loader"]


def train_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    **kwargs,
) -> DataLoader:
    """A MONAI ``DataLoader`` whose order depends only on ``(seed, epoch)``, and that shards across DDP ranks.

    It uses a ``DistributedSampler`` (one replica outside ``torch.distributed``); MONAI workflows call its
    ``set_epoch`` at every epoch start, so an interrupted run resumed from an epoch checkpoint sees the same
    batches as an uninterrupted one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    distributed = dist.is_available() and dist.is_initialized()
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist.get_world_size() if distributed else 1,
        rank=dist.get_rank() if distributed else 0,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, **kwargs)


def assignment_loader(dataset: Dataset, batch_size: int = 256, num_workers: int = 0, **kwargs) -> DataLoader:
    """A loader that yields every image exactly once, in order (for the full-batch assignment pass).

    ``dataset`` must apply deterministic transforms only (no random augmentation).
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                      **kwargs)

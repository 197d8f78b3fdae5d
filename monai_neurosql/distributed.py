"""The DDP exchange of the assignment step: who am I, gather cost rows, broadcast a result, sum over ranks.

Every function is a no-op in a single process, so the callers read the same with and without
``torch.distributed``; under DDP every rank must call them in the same order (they are collectives).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["broadcast", "comm_device", "gather_rows", "sum_over_ranks", "world"]


def world() -> tuple[bool, int, int]:
    """``(distributed, rank, world_size)``: ``(False, 0, 1)`` outside an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def comm_device() -> torch.device:
    """Where collectives run: the current CUDA device under NCCL, else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(local: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' ``(rows, local)`` pieces, on every rank, sorted by row id (a single process returns its own)."""
    distributed, _, size_of_world = world()
    if not distributed:
        return rows, local
    comm = comm_device()
    count = torch.tensor([rows.numel()], device=comm)
    counts = [torch.zeros_like(count) for _ in range(size_of_world)]
    dist.all_gather(counts, count)
    size = int(max(int(c) for c in counts))
    padded = torch.zeros(size, *local.shape[1:], dtype=local.dtype, device=comm)
    padded[: rows.numel()] = local.to(comm)
    ids = torch.full((size,), -1, dtype=torch.long, device=comm)
    ids[: rows.numel()] = rows.to(comm)
    all_values = [torch.empty_like(padded) for _ in range(size_of_world)]
    all_ids = [torch.empty_like(ids) for _ in range(size_of_world)]
    dist.all_gather(all_values, padded)
    dist.all_gather(all_ids, ids)
    values, ids = torch.cat(all_values), torch.cat(all_ids)
    valid = ids >= 0
    values, ids = values[valid], ids[valid]
    order = torch.argsort(ids, stable=True)
    ids, values = ids[order], values[order]
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]  # rows that two shards both hold (sampler padding)
    return ids[keep].to(local.device), values[keep].to(local.device)


def broadcast(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (same shape and dtype everywhere), on ``t``'s device."""
    distributed, _, _ = world()
    if not distributed:
        return t
    buffer = t.to(comm_device()).contiguous()
    dist.broadcast(buffer, src=0)
    return buffer.to(t.device)


def sum_over_ranks(value: float | torch.Tensor) -> float | torch.Tensor:
    """The sum of ``value`` (a number, or a tensor of the same shape on every rank) over all ranks; ``value``
    itself in a single process. A tensor comes back on its own device."""
    if not world()[0]:
        return value
    if isinstance(value, torch.Tensor):
        total = value.to(comm_device(), copy=True)
        dist.all_reduce(total)
        return total.to(value.device)
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t)
    return float(t)

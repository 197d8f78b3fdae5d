"""One quantile-assignment step (paper Algorithm 1 lines 5-7, Algorithm 2 lines 9-15), at any scale.

- dense: the cost rows ``C[i, k] = l(X_i, G(Q_k))`` are built in blocks into one matrix and solved exactly;
- sparse (when the matrix would exceed ``max_dense_bytes``): only each row's ``K`` cheapest lattice points are
  kept while the rows stream by, the sparse problem is solved by the epsilon-scaled auction, and a dual
  certificate checks the result against every excluded entry (rows that fail get more candidates);
- distributed (``torch.distributed`` initialized): every rank builds the rows of its own images, the rows are
  gathered, rank 0 solves once and broadcasts the assignment, and every rank applies the same update, so the
  latent banks stay identical.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..cost import pairwise_cost
from ..distributed import broadcast as _broadcast
from ..distributed import gather_rows as _gather_rows
from ..distributed import sum_over_ranks as _sum_over_ranks
from ..distributed import world as _world
from ..generate import decode
from .solvers import solve_assignment
from .sparse import sparse_certified_assignment

if TYPE_CHECKING:
    from ..latent_bank import LatentBank

__all__ = ["DEFAULT_MAX_DENSE_BYTES", "assign_codes"]

#: Largest dense cost matrix built before switching to sparse candidates (bytes; 4 GiB = 32k x 32k float32).
DEFAULT_MAX_DENSE_BYTES = 4 * 2**30


@torch.no_grad()
def assign_codes(
    generator: torch.nn.Module,
    bank: LatentBank,
    images: torch.Tensor,
    rows: torch.Tensor | None = None,
    lattice_subset: torch.Tensor | None = None,
    conditional: bool = False,
    method: str = "hungarian",
    momentum: float = 0.7,
    cost: str = "ssim_l1",
    cost_kwargs: Mapping[str, Any] | None = None,
    decode_batch_size: int = 256,
    block_rows: int = 1024,
    progress: bool = False,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
    candidates: int = 128,
    full: bool | None = None,
) -> dict[str, float]:
    """One quantile assignment: cost ``C[i, k] = l(X_i, G(Q_k))``, solve, momentum update of the bank.

    Full batch (Algorithm 1, lines 5-7): ``images`` are all training images with ``rows`` their bank rows
    (``None``: ``0..n-1``), or, under ``torch.distributed``, this rank's share of them; every group (class) of the
    bank is matched to its whole lattice. Mini-batch (Algorithm 2, lines 9-15): ``lattice_subset`` holds, per
    class, as many lattice points as ``rows`` has rows, and each rank solves its own batch; the updates of all
    ranks are then exchanged so that every bank applies all of them.

    Args:
        generator: the generator (evaluated in eval mode, no gradients); under DDP pass the unwrapped module.
        bank: the latent bank to update.
        images: images of ``rows``.
        rows: bank rows of ``images``; ``None`` for all rows in order.
        lattice_subset: mini-batch mode: the lattice points to assign to ``rows``.
        conditional: pass each class to the generator (class-conditional generators).
        method, momentum, cost, cost_kwargs: assignment method, ``rho``, and :func:`pairwise_cost` settings.
        decode_batch_size: batch size of ``G(Q)``.
        block_rows: rows of the cost matrix built per call (progress granularity, bounded scratch memory).
        progress: progress bar over the cost rows.
        max_dense_bytes: largest dense cost matrix; above it the sparse certified path is used (full batch).
        candidates: candidates per row on the sparse path.
        full: force full-batch (``True``) or mini-batch (``False``) semantics; default: mini-batch exactly when
            ``lattice_subset`` is given.

    Returns:
        ``{"cost": mean assigned cost, "moved": fraction of codes whose lattice point changed, "n": rows assigned,
        "seconds", "decode_seconds", "cost_seconds", "solve_seconds", "sparse": 0/1, "certified": 0/1,
        "gap_bound"}`` (the same on every rank).
    """
    start = time.perf_counter()
    full = lattice_subset is None if full is None else full
    stats = {"decode_seconds": 0.0, "cost_seconds": 0.0, "solve_seconds": 0.0, "sparse": 0.0, "certified": 1.0,
             "gap_bound": 0.0}
    cost_kwargs = dict(cost_kwargs or {})
    device = images.device
    rows = torch.arange(bank.n) if rows is None else torch.as_tensor(rows).long()
    rows_bank = rows.to(bank.data_groups.device)
    distributed, rank, _ = _world()
    total_cost, total_moved, total_rows = 0.0, 0.0, 0
    bar = tqdm(total=len(rows), desc="assignment cost rows", disable=not progress or rank != 0, leave=False)
    if full:
        plan = [(g, bank.lattice_rows(g)) for g in bank.groups()]
    else:
        subset = torch.as_tensor(lattice_subset).long().to(bank.lattice_groups.device)
        plan = [(g, subset[bank.lattice_groups[subset] == g]) for g in torch.unique(bank.data_groups[rows_bank]).tolist()]
    for g, lattice_idx in plan:
        in_group = torch.nonzero(bank.data_groups[rows_bank] == g).flatten()
        group_rows = rows_bank[in_group]
        x = images[in_group.to(device)]
        t = time.perf_counter()
        decoded = decode(generator, bank.lattice_points[lattice_idx], g if conditional else None,
                         decode_batch_size, device=device)
        stats["decode_seconds"] += time.perf_counter() - t

        def cost_block(r: torch.Tensor) -> torch.Tensor:
            return pairwise_cost(x[r.to(device)], decoded, kind=cost, **cost_kwargs)

        global_mode = full and distributed
        n_global = len(lattice_idx) if full else len(group_rows)
        dense_bytes = 4 * n_global * len(lattice_idx)
        if full and dense_bytes > max_dense_bytes:
            # sparse: each row keeps its cheapest candidates; the dense matrix never exists
            position = {int(r): i for i, r in enumerate(group_rows.tolist())}
            all_rows = bank.data_rows(g).to(group_rows.device)  # global row order of the group

            cost_time = [0.0]

            def candidate_rows(subset_rows: torch.Tensor | None, k: int):
                started = time.perf_counter()
                wanted = all_rows if subset_rows is None else all_rows[subset_rows.to(all_rows.device)]
                mine = [position[int(r)] for r in wanted.tolist() if int(r) in position]
                mine_t = torch.tensor(mine, dtype=torch.long)
                take = min(k + 1, len(lattice_idx))
                cols = torch.empty(len(mine), take - (take > k), dtype=torch.long, device=device)
                vals = torch.empty(len(mine), take - (take > k), device=device)
                thr = torch.full((len(mine),), float("inf"), device=device)
                for b0 in range(0, len(mine), block_rows):
                    block = cost_block(mine_t[b0 : b0 + block_rows])
                    v, c = block.topk(take, dim=1, largest=False)
                    cols[b0 : b0 + block_rows], vals[b0 : b0 + block_rows] = c[:, :k], v[:, :k]
                    if take > k:
                        thr[b0 : b0 + block_rows] = v[:, k]
                    bar.update(len(block))
                packed = torch.cat([vals, thr[:, None], cols.double()], 1)
                ids, packed = _gather_rows(packed, group_rows[mine_t.to(group_rows.device)])
                pos = torch.searchsorted(all_rows.to(ids.device), ids)
                order = torch.argsort(pos)
                packed = packed[order]
                width = (packed.shape[1] - 1) // 2
                cost_time[0] += time.perf_counter() - started
                return packed[:, width + 1 :].long(), packed[:, :width].float(), packed[:, width].float()

            # under DDP every rank runs this loop in lockstep (candidate_rows gathers), on identical gathered
            # inputs with a deterministic solver; rank 0's answer is broadcast all the same
            t = time.perf_counter()
            col, info = sparse_certified_assignment(candidate_rows, n_global, candidates)
            col = _broadcast(col.to(device))
            stats["cost_seconds"] += cost_time[0]
            stats["solve_seconds"] += time.perf_counter() - t - cost_time[0]
            stats["sparse"], stats["gap_bound"] = 1.0, stats["gap_bound"] + info["gap_bound"]
            stats["certified"] = min(stats["certified"], info["certified"])
            assigned_rows, matched_cost = all_rows, info["assigned_cost_sum"]
        else:
            t = time.perf_counter()
            local = torch.empty(len(group_rows), len(lattice_idx), device=device)
            for r0 in range(0, len(group_rows), block_rows):
                local[r0 : r0 + block_rows] = cost_block(torch.arange(r0, min(r0 + block_rows, len(group_rows))))
                bar.update(min(block_rows, len(group_rows) - r0))
            stats["cost_seconds"] += time.perf_counter() - t
            assigned_rows, matrix = _gather_rows(local, group_rows) if global_mode else (group_rows, local)
            t = time.perf_counter()
            if global_mode:
                col = solve_assignment(matrix, method).to(device) if rank == 0 else torch.empty(
                    len(assigned_rows), dtype=torch.long, device=device)
                col = _broadcast(col)
            else:
                col = solve_assignment(matrix, method).to(device)
            stats["solve_seconds"] += time.perf_counter() - t
            matched_cost = float(matrix[torch.arange(len(assigned_rows), device=matrix.device),
                                        col.to(matrix.device)].double().sum())
        lattice_choice = lattice_idx.to(col.device)[col]
        if not full and distributed:
            # mini-batch: every rank solved its own batch; exchange the updates so that all banks apply all of them
            packed_rows, packed_choice = _gather_rows(lattice_choice[:, None].double(), assigned_rows)
            assigned_rows, lattice_choice = packed_rows, packed_choice[:, 0].long()
            matched_cost = _sum_over_ranks(matched_cost)
        total_cost += matched_cost
        total_moved += bank.update(assigned_rows, lattice_choice, momentum) * len(assigned_rows)
        total_rows += len(assigned_rows)
    bar.close()
    stats.update({
        "cost": total_cost / max(1, total_rows),
        "moved": total_moved / max(1, total_rows),
        "n": float(total_rows),
        "seconds": time.perf_counter() - start,
    })
    return stats

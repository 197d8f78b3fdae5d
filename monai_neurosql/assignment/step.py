"""One quantile-assignment step (paper Algorithm 1 lines 5-7, Algorithm 2 lines 9-15), at any scale.

- dense: the cost rows ``C[i, k] = l(X_i, G(Q_k))`` are built in blocks into one matrix and solved exactly;
- sparse (when the matrix would exceed ``max_dense_bytes``): only each row's ``K`` cheapest lattice points are
  kept while the rows stream by, the sparse problem is solved by the epsilon-scaled auction, and a dual
  certificate checks the result against every excluded entry (rows that fail get more candidates);
- distributed (``torch.distributed`` initialized): every rank builds the rows of its own images, the rows are
  gathered, rank 0 solves once and broadcasts the assignment, and every rank applies the same update, so the
  latent banks stay identical.

The step is :func:`assign_codes`; each group (class) of the bank is one :class:`_GroupProblem`, solved by
:func:`_solve_dense` or :func:`_solve_sparse`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..distributed import broadcast, gather_rows, sum_over_ranks, world
from ..generate import decode
from ..latent_bank import group_positions
from .settings import ASSIGNMENT_COST, AssignmentSettings
from .solvers import assignment_cost, solve_assignment
from .sparse import sparse_certified_assignment

if TYPE_CHECKING:
    from ..latent_bank import LatentBank

__all__ = ["assign_codes"]

_TIMES = ("decode_seconds", "cost_seconds", "solve_seconds")


@contextlib.contextmanager
def _timed(stats: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        stats[key] += time.perf_counter() - start


@dataclass
class _GroupProblem:
    """One group's assignment on this rank: its images, their bank rows and the decoded lattice points."""

    rows: torch.Tensor  # bank rows of ``images`` held by this rank
    images: torch.Tensor
    decoded: torch.Tensor  # G(Q_k) of the group's lattice points (all ranks: the same)
    settings: AssignmentSettings
    stats: dict[str, float]
    bar: tqdm
    distributed: bool  # exchange with the other ranks (False: this process holds the whole problem)

    def gather(self, values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' ``(rows, values)`` sorted by row (:func:`~monai_neurosql.distributed.gather_rows`)."""
        return gather_rows(values, rows) if self.distributed else (rows, values)

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` (:func:`~monai_neurosql.distributed.broadcast`)."""
        return broadcast(t) if self.distributed else t

    def cost_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Cost rows of ``images[local]`` against every decoded lattice point."""
        return self.settings.cost_matrix(self.images[local.to(self.images.device)], self.decoded)

    def blocks(self, local: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """``(slice into local, cost rows)`` in blocks of ``block_rows`` (bounded scratch memory, progress)."""
        step = self.settings.block_rows
        for start in range(0, len(local), step):
            block = self.cost_rows(local[start : start + step])
            self.bar.update(len(block))
            yield slice(start, start + step), block


def _plan(bank: LatentBank, rows: torch.Tensor, lattice_subset: torch.Tensor | None,
          full: bool) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(group, positions of its rows within rows, its lattice indices)`` for every group to solve.

    Full batch: every group of the bank with its whole lattice, also a group with no rows on this rank (the ranks
    run the collectives of every group in lockstep). Mini-batch: the groups of ``rows`` with their points of
    ``lattice_subset``.
    """
    row_groups = bank.data_groups[rows.to(bank.data_groups.device)]
    if full:
        for g, positions in group_positions(row_groups, bank.groups()):
            yield g, positions, bank.lattice_rows(g)
        return
    subset = torch.as_tensor(lattice_subset).long().to(bank.lattice_groups.device)
    for g, positions in group_positions(row_groups):
        yield g, positions, subset[bank.lattice_groups[subset] == g]


def _solve_dense(problem: _GroupProblem, global_mode: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The whole cost matrix, solved once: ``(assigned bank rows, column of each, summed matched cost)``.

    ``global_mode`` (full batch under DDP): the ranks' rows are gathered, rank 0 solves, the result is broadcast.
    """
    local_rows = torch.arange(len(problem.rows))
    with _timed(problem.stats, "cost_seconds"):
        local = torch.empty(len(problem.rows), len(problem.decoded), device=problem.images.device)
        for part, block in problem.blocks(local_rows):
            local[part] = block
    assigned_rows, matrix = problem.gather(local, problem.rows) if global_mode else (problem.rows, local)
    with _timed(problem.stats, "solve_seconds"):
        if not global_mode or world()[1] == 0:
            col = solve_assignment(matrix, problem.settings.method).to(problem.images.device)
        else:
            col = torch.empty(len(assigned_rows), dtype=torch.long, device=problem.images.device)
        col = problem.broadcast(col) if global_mode else col
    return assigned_rows, col, float(assignment_cost(matrix, col, reduction="sum"))


class _CandidateRows:
    """``candidate_rows(rows, K)`` of :func:`sparse_certified_assignment` for one group, gathered over ranks.

    For the wanted rows of the group (all when ``None``, else positions in the group's global row order), every
    rank computes the ``K`` cheapest lattice points of the rows it holds, and the pieces are gathered in that order.
    """

    def __init__(self, problem: _GroupProblem, all_rows: torch.Tensor) -> None:
        self.problem = problem
        self.all_rows = all_rows.to(problem.rows.device)  # the group's rows in global order
        self.position = {int(r): i for i, r in enumerate(problem.rows.tolist())}
        self.seconds = 0.0

    def __call__(self, wanted_positions: torch.Tensor | None, k: int) -> tuple[torch.Tensor, ...]:
        started = time.perf_counter()
        wanted = self.all_rows if wanted_positions is None else self.all_rows[wanted_positions.to(self.all_rows.device)]
        mine = torch.tensor([self.position[r] for r in wanted.tolist() if r in self.position], dtype=torch.long)
        device = self.problem.images.device
        take = min(k + 1, len(self.problem.decoded))  # the (K+1)-th cheapest bounds every excluded cost
        width = take - (take > k)
        cols = torch.empty(len(mine), width, dtype=torch.long, device=device)
        vals = torch.empty(len(mine), width, device=device)
        thr = torch.full((len(mine),), float("inf"), device=device)
        for part, block in self.problem.blocks(mine):
            v, c = block.topk(take, dim=1, largest=False)
            cols[part], vals[part] = c[:, :k], v[:, :k]
            if take > k:
                thr[part] = v[:, k]
        packed = torch.cat([vals, thr[:, None], cols.double()], 1)
        ids, packed = self.problem.gather(packed, self.problem.rows[mine.to(self.problem.rows.device)])
        packed = packed[torch.argsort(torch.searchsorted(self.all_rows.to(ids.device), ids))]
        self.seconds += time.perf_counter() - started
        return packed[:, width + 1 :].long(), packed[:, :width].float(), packed[:, width].float()


def _solve_sparse(problem: _GroupProblem, all_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Sparse candidates with a certificate (the dense matrix never exists); same return as :func:`_solve_dense`.

    Under DDP every rank runs this in lockstep (the candidate rows are gathered) on identical gathered inputs with
    a deterministic solver; rank 0's answer is broadcast all the same.
    """
    candidate_rows = _CandidateRows(problem, all_rows)
    started = time.perf_counter()
    col, info = sparse_certified_assignment(candidate_rows, len(all_rows), problem.settings.candidates)
    col = problem.broadcast(col.to(problem.images.device))
    stats = problem.stats
    stats["cost_seconds"] += candidate_rows.seconds
    stats["solve_seconds"] += time.perf_counter() - started - candidate_rows.seconds
    stats["sparse"], stats["gap_bound"] = 1.0, stats["gap_bound"] + info["gap_bound"]
    stats["certified"] = min(stats["certified"], info["certified"])
    return all_rows, col, info["assigned_cost_sum"]


@torch.no_grad()
def assign_codes(
    generator: torch.nn.Module,
    bank: LatentBank,
    images: torch.Tensor,
    rows: torch.Tensor | None = None,
    lattice_subset: torch.Tensor | None = None,
    conditional: bool = False,
    settings: AssignmentSettings | Mapping[str, Any] | None = None,
    full: bool | None = None,
    local: bool = False,
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
        images: ``N x C x [SPATIAL]`` images of ``rows``.
        rows: bank rows of ``images``; ``None`` for all rows in order.
        lattice_subset: mini-batch mode: the lattice points to assign to ``rows``.
        conditional: pass each class to the generator (class-conditional generators).
        settings: :class:`AssignmentSettings` (or a dict of its fields): solver, momentum, cost and its loss,
            batch and memory bounds. Default: the defaults.
        full: force full-batch (``True``) or mini-batch (``False``) semantics; default: mini-batch exactly when
            ``lattice_subset`` is given.
        local: this process holds the whole problem and solves it alone, without collectives, also under
            ``torch.distributed`` (the held-out validation cost: any subset of the ranks may call it).

    Returns:
        ``{"cost": mean assigned cost, "moved": fraction of codes whose lattice point changed, "n": rows assigned,
        "seconds", "decode_seconds", "cost_seconds", "solve_seconds", "sparse": 0/1, "certified": 0/1,
        "gap_bound"}`` (the same on every rank).

    Example::

        stats = assign_codes(generator, bank, images, settings={"method": "greedy", "momentum": 1.0})
    """
    start = time.perf_counter()
    settings = AssignmentSettings.coerce(settings).with_default_cost(ASSIGNMENT_COST)
    full = lattice_subset is None if full is None else full
    rows = torch.arange(bank.n) if rows is None else torch.as_tensor(rows).long()
    rows_bank = rows.to(bank.data_groups.device)
    distributed, rank, _ = world()
    distributed = distributed and not local
    stats = dict.fromkeys(_TIMES, 0.0) | {"sparse": 0.0, "certified": 1.0, "gap_bound": 0.0}
    total_cost, total_moved, total_rows = 0.0, 0.0, 0
    bar = tqdm(total=len(rows), desc="assignment cost rows", disable=not settings.progress or rank != 0, leave=False)
    for g, positions, lattice_idx in _plan(bank, rows_bank, lattice_subset, full):
        with _timed(stats, "decode_seconds"):
            decoded = decode(generator, bank.lattice_points[lattice_idx], g if conditional else None,
                             settings.decode_batch_size, device=images.device)
        problem = _GroupProblem(rows_bank[positions], images[positions.to(images.device)], decoded, settings,
                                stats, bar, distributed)
        num_rows = len(lattice_idx) if full else len(positions)  # rows of the whole (all-rank) problem
        if full and 4 * num_rows * len(lattice_idx) > settings.max_dense_bytes:
            assigned_rows, col, matched_cost = _solve_sparse(problem, bank.data_rows(g))
        else:
            assigned_rows, col, matched_cost = _solve_dense(problem, global_mode=full and distributed)
        lattice_choice = lattice_idx.to(col.device)[col]
        if not full and distributed:
            # mini-batch: every rank solved its own batch; exchange the updates so that all banks apply all of them
            assigned_rows, packed = problem.gather(lattice_choice[:, None].double(), assigned_rows)
            lattice_choice, matched_cost = packed[:, 0].long(), sum_over_ranks(matched_cost)
        total_cost += matched_cost
        total_moved += bank.update(assigned_rows, lattice_choice, settings.momentum) * len(assigned_rows)
        total_rows += len(assigned_rows)
    bar.close()
    stats.update({"cost": total_cost / max(1, total_rows), "moved": total_moved / max(1, total_rows),
                  "n": float(total_rows), "seconds": time.perf_counter() - start})
    return stats

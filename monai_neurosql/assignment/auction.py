"""Auction assignment (Bertsekas) with epsilon scaling, in torch: runs where the costs are (CPU or CUDA), dense or on
sparse candidate lists, with a bounded and checkable optimality gap."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AuctionResult", "auction_assignment", "sparse_auction_assignment"]


@dataclass
class AuctionResult:
    """Result of an auction solve.

    Attributes:
        col_ind: ``(m,)`` column of every row (distinct).
        prices: ``(k,)`` final column prices (dual variables of the benefit form ``-cost``).
        eps: the final epsilon: the assignment satisfies epsilon-complementary slackness, so its total cost is at
            most ``m * eps`` above the optimum over the same candidates.
        iterations: bidding rounds over all phases.
        feasible: ``False`` when the candidates admit no assignment of every row (sparse solves only).
        solved_rows: rows of the problem actually solved (rectangular problems are padded to square).
    """

    col_ind: torch.Tensor
    prices: torch.Tensor
    eps: float
    iterations: int
    feasible: bool = True
    solved_rows: int | None = None

    @property
    def gap_bound(self) -> float:
        """Upper bound on the total cost above the optimum (over the candidates given to the solver)."""
        rows = self.col_ind.numel() if self.solved_rows is None else self.solved_rows
        return float(rows * self.eps)


def _phases(value_range: float, eps_final: float, factor: float) -> list[float]:
    eps = max(value_range / 4.0, eps_final)
    out = [eps]
    while eps > eps_final:
        eps = max(eps / factor, eps_final)
        out.append(eps)
    return out


def _bid_round(values: torch.Tensor, cols: torch.Tensor | None, rows: torch.Tensor, prices: torch.Tensor,
               eps: float, num_cols: int):
    """One Jacobi bidding round. ``values``: benefits minus prices for the bidding rows, ``(u, K)``; ``cols``:
    their column ids (``None`` for dense rows). Returns the winning (column, row, bid) triples."""
    if values.shape[1] >= 2:
        top = values.topk(2, dim=1)
        best, second = top.values[:, 0], top.values[:, 1]
        arg = top.indices[:, 0]
    else:
        best, arg = values[:, 0], torch.zeros(values.shape[0], dtype=torch.long, device=values.device)
        second = torch.full_like(best, float("-inf"))
    target = arg if cols is None else cols.gather(1, arg[:, None]).squeeze(1)
    # a row with a single usable column bids as if the second best were eps below (no competitor to price out)
    increment = torch.where(torch.isfinite(second), best - second, torch.zeros_like(best)) + eps
    bid = prices[target] + increment
    best_bid = torch.full((num_cols,), float("-inf"), dtype=bid.dtype, device=bid.device)
    best_bid.scatter_reduce_(0, target, bid, reduce="amax")
    is_winner = bid >= best_bid[target]
    # ties between equal bids: the highest row index wins, deterministically
    winner = torch.full((num_cols,), -1, dtype=torch.long, device=bid.device)
    winner.scatter_reduce_(0, target[is_winner], rows[is_winner], reduce="amax")
    won_cols = torch.nonzero(winner >= 0).flatten()
    return won_cols, winner[won_cols], best_bid[won_cols]


def _auction(benefit_rows, m: int, k: int, value_range: float, eps_final: float, factor: float,
             device: torch.device, max_price: float | None, prices: torch.Tensor | None = None) -> AuctionResult:
    """Core loop; ``benefit_rows(rows, prices) -> (values (u, K), cols (u, K) | None)``."""
    prices = torch.zeros(k, dtype=torch.float64, device=device) if prices is None else prices.clone()
    iterations = 0
    phases = _phases(value_range, eps_final, factor)
    for eps in phases:
        owner = torch.full((k,), -1, dtype=torch.long, device=device)
        assigned = torch.full((m,), -1, dtype=torch.long, device=device)
        while True:
            rows = torch.nonzero(assigned < 0).flatten()
            if rows.numel() == 0:
                break
            iterations += 1
            values, cols = benefit_rows(rows, prices)
            if not bool(torch.isfinite(values).any(dim=1).all()):
                return AuctionResult(assigned, prices, eps, iterations, feasible=False)
            won_cols, won_rows, bids = _bid_round(values, cols, rows, prices, eps, k)
            previous = owner[won_cols]
            assigned[previous[previous >= 0]] = -1
            owner[won_cols] = won_rows
            assigned[won_rows] = won_cols
            prices[won_cols] = bids
            if max_price is not None and float(prices.max()) > max_price:
                return AuctionResult(assigned, prices, eps, iterations, feasible=False)
    return AuctionResult(assigned, prices, phases[-1], iterations)


def auction_assignment(cost: torch.Tensor, eps_final: float | None = None, factor: float = 5.0,
                       row_block: int = 4096) -> AuctionResult:
    """Dense auction with epsilon scaling on ``cost``'s device: ``min sum_i cost[i, col[i]]`` within ``m * eps``.

    Forward auction in Jacobi form: every unassigned row bids at once for its best column (benefit ``-cost``
    minus price) by the gap to its second best plus ``eps``; each column goes to its highest bidder. Phases
    shrink ``eps`` by ``factor`` from a quarter of the cost range down to ``eps_final``; each phase ends with an
    assignment that satisfies eps-complementary slackness, so the result's total cost is at most
    ``m * eps_final`` above the optimum (Bertsekas 1988). Default ``eps_final = range * 1e-6 / m``: a total gap
    below one millionth of the cost range.

    Args:
        cost: ``(m, k)`` finite costs, ``m <= k``, any device.
        eps_final: final epsilon.
        factor: epsilon reduction per phase.
        row_block: rows evaluated per block (memory: ``row_block x k`` values).

    Returns:
        :class:`AuctionResult`.
    """
    m, k = cost.shape
    cost64 = cost.double()
    if m < k:
        # epsilon-scaled forward auction is optimal for square problems only (unassigned columns keep prices from
        # earlier phases); k - m zero-cost dummy rows make the problem square without changing the optimum
        square = auction_assignment(torch.cat([cost64, cost64.new_zeros(k - m, k)]), eps_final, factor, row_block)
        return AuctionResult(square.col_ind[:m], square.prices, square.eps, square.iterations, solved_rows=k)
    value_range = float(cost64.max() - cost64.min()) if cost.numel() else 0.0
    value_range = value_range if value_range > 0 else 1.0
    eps_final = value_range * 1e-6 / max(m, 1) if eps_final is None else float(eps_final)

    def benefit_rows(rows: torch.Tensor, prices: torch.Tensor):
        if rows.numel() <= row_block:
            return -cost64[rows] - prices[None, :], None
        return torch.cat([-cost64[r] - prices[None, :] for r in rows.split(row_block)]), None

    return _auction(benefit_rows, m, k, value_range, eps_final, factor, cost.device, max_price=None)


def sparse_auction_assignment(cand_cols: torch.Tensor, cand_cost: torch.Tensor, num_cols: int,
                              eps_final: float | None = None, factor: float = 5.0,
                              prices: torch.Tensor | None = None) -> AuctionResult:
    """Auction on sparse candidate lists: row ``i`` may only take the columns ``cand_cols[i]`` (costs
    ``cand_cost[i]``; pad with any column and an infinite cost). Square problems (``m == num_cols``), as the
    full-batch NeuroSQL assignment is.

    When the candidates admit no assignment of every row, prices grow without bound; the solve stops once a price
    exceeds ``2 * m * range`` and returns ``feasible=False`` (add candidates and solve again; ``prices`` warm-starts
    the next solve).

    Args:
        cand_cols: ``(m, K)`` candidate columns per row.
        cand_cost: ``(m, K)`` their costs.
        num_cols: number of columns ``k >= m``.
        eps_final, factor: as in :func:`auction_assignment`.
        prices: warm-start prices ``(num_cols,)``.
    """
    m = cand_cols.shape[0]
    if m != num_cols:
        raise ValueError(f"sparse auction solves square problems; got {m} rows and {num_cols} columns.")
    cost64 = cand_cost.double()
    finite = cost64[torch.isfinite(cost64)]
    value_range = float(finite.max() - finite.min()) if finite.numel() else 1.0
    value_range = value_range if value_range > 0 else 1.0
    eps_final = value_range * 1e-6 / max(m, 1) if eps_final is None else float(eps_final)
    cols = cand_cols.long()

    def benefit_rows(rows: torch.Tensor, price: torch.Tensor):
        c = cols[rows]
        return -cost64[rows] - price[c], c

    return _auction(benefit_rows, m, num_cols, value_range, eps_final, factor, cand_cols.device,
                    max_price=2.0 * m * value_range + 1.0, prices=prices)

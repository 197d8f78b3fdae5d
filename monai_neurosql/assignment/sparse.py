"""The sparse certified assignment: exact up to epsilon from per-row candidate lists, with a dual certificate.

Used by the assignment step when the dense ``n x n`` cost matrix would exceed its memory bound.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .auction import sparse_auction_assignment

__all__ = ["sparse_certified_assignment"]


def _widen(cols: torch.Tensor, costs: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate lists padded to ``width`` columns with a repeated column at infinite cost (never chosen)."""
    pad = width - cols.shape[1]
    if pad == 0:
        return cols, costs
    inf = torch.full((costs.shape[0], pad), float("inf"), dtype=costs.dtype, device=costs.device)
    return torch.cat([cols, cols[:, :1].expand(-1, pad)], 1), torch.cat([costs, inf], 1)


def sparse_certified_assignment(
    candidate_rows: Callable[[torch.Tensor | None, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    n: int,
    candidates: int = 128,
    max_rounds: int = 6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Exact-up-to-epsilon assignment of a square ``n x n`` problem from per-row candidate lists.

    ``candidate_rows(rows, K)`` returns, for the given rows (all when ``None``), their ``K`` cheapest columns and
    costs ``(cols (r, K), costs (r, K), threshold (r,))``, where ``threshold`` is a lower bound of every cost left
    out (the ``K+1``-th smallest). The sparse problem is solved by :func:`sparse_auction_assignment`; then
    eps-complementary slackness is checked against the *excluded* entries with the bound
    ``-c_ij - p_j <= -threshold_i - min(p)``: when it holds for every row, the assignment is within ``n * eps``
    of the optimum of the full dense problem (a certificate, not an estimate). Rows that fail get four times
    more candidates and the problem is solved again, warm-started from the prices, up to ``max_rounds`` times.

    Returns:
        ``(col_ind, info)`` with ``info = {"certified": 0/1, "gap_bound", "candidates", "uncertified_rows",
        "rounds", "assigned_cost_sum"}``.
    """
    k = min(candidates, n)
    cols, costs, threshold = candidate_rows(None, k)
    prices = None
    result = None
    uncertified = n
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        result = sparse_auction_assignment(cols, costs, n, prices=prices)
        if not result.feasible:
            retry = torch.arange(n)
        else:
            prices = result.prices
            row = torch.arange(n, device=cols.device)
            assigned_cost = costs.double().gather(1, (cols == result.col_ind[:, None]).double().argmax(1)[:, None])
            assigned_cost = assigned_cost.squeeze(1)
            assigned_value = -assigned_cost - prices[result.col_ind]
            excluded_bound = -threshold.double() - prices.min()
            ok = (assigned_value >= excluded_bound - result.eps) | ~torch.isfinite(threshold)
            retry = row[~ok].cpu()
            uncertified = int(retry.numel())
            if uncertified == 0:
                break
        if rounds == max_rounds:
            break
        k = min(n, 4 * k)  # at k = n a retried row gets every column: its certificate then holds by definition
        new_cols, new_costs, new_threshold = candidate_rows(retry, k)
        width = max(cols.shape[1], new_cols.shape[1])
        cols, costs = _widen(cols, costs, width)
        new_cols, new_costs = _widen(new_cols, new_costs, width)
        cols[retry.to(cols.device)], costs[retry.to(cols.device)] = new_cols, new_costs
        threshold[retry.to(threshold.device)] = new_threshold
        if not result.feasible:
            prices = None
    if result is None or not result.feasible:
        raise RuntimeError(f"no assignment found among {k} candidates per row; raise candidates or max_dense_bytes.")
    info = {"certified": float(uncertified == 0), "gap_bound": result.gap_bound, "candidates": float(k),
            "uncertified_rows": float(uncertified), "rounds": float(rounds),
            "assigned_cost_sum": float(assigned_cost.sum())}
    return result.col_ind, info

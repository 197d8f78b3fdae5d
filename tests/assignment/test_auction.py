from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_neurosql import solve_assignment
from monai_neurosql.assignment.auction import auction_assignment, sparse_auction_assignment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _optimum(cost: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def _cases(seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(120, 6)), rng.normal(size=(150, 6))
    return {
        "uniform": rng.random((100, 100)),
        "structured": ((a[:, None] - b[None]) ** 2).sum(-1)[:, :120],
        "ties": rng.integers(0, 4, size=(60, 60)).astype(np.float64),
        "rectangular": ((a[:, None] - b[None]) ** 2).sum(-1),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(_cases()))
def test_auction_within_its_gap_bound(device, name):
    cost = _cases()[name]
    result = auction_assignment(torch.from_numpy(cost).to(device))
    col = result.col_ind.cpu().numpy()
    assert len(set(col.tolist())) == cost.shape[0] and col.min() >= 0 and col.max() < cost.shape[1]
    total = float(cost[np.arange(cost.shape[0]), col].sum())
    assert total - _optimum(cost) <= result.gap_bound + 1e-9
    assert result.col_ind.device.type == device
    assert solve_assignment(torch.from_numpy(cost).to(device), "auction").device.type == device


def test_sparse_auction_on_candidates_and_infeasibility():
    cost = _cases()["uniform"]
    full = torch.from_numpy(cost)
    values, cols = full.topk(40, dim=1, largest=False)
    result = sparse_auction_assignment(cols, values, 100)
    assert result.feasible
    total = float(cost[np.arange(100), result.col_ind.numpy()].sum())
    assert total - _optimum(cost) <= result.gap_bound + 1e-9
    # every row may only take column 0: no assignment exists, and the solver says so instead of looping
    blocked = sparse_auction_assignment(torch.zeros(5, 1, dtype=torch.long), torch.ones(5, 1), 5)
    assert not blocked.feasible
    with pytest.raises(ValueError, match="square"):
        sparse_auction_assignment(cols[:50], values[:50], 100)

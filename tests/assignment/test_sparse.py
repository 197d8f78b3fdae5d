from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from monai_neurosql.assignment import sparse_certified_assignment


def test_sparse_solver_widens_candidates_until_certified():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 4)), rng.normal(size=(80, 4))
    full = torch.from_numpy(((a[:, None] - b[None]) ** 2).sum(-1))
    calls = []

    def candidate_rows(rows, k):
        calls.append(k)
        block = full if rows is None else full[rows]
        if k >= block.shape[1]:  # every column: nothing is left out
            v, c = block.sort(dim=1)
            return c, v, torch.full((len(block),), float("inf"), dtype=v.dtype)
        v, c = block.topk(k + 1, dim=1, largest=False)
        return c[:, :k], v[:, :k], v[:, k]

    col, info = sparse_certified_assignment(candidate_rows, 80, candidates=2)
    assert info["certified"] == 1 and calls[0] == 2 and max(calls) > 2
    rows, cols = linear_sum_assignment(full.numpy())
    assert full[torch.arange(80), col].sum() - full.numpy()[rows, cols].sum() <= info["gap_bound"] + 1e-9

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_neurosql import LatentBank, pairwise_cost
from monai_neurosql.assignment import assign_codes, collect_images, sparse_certified_assignment
from monai_neurosql.generate import decode
from monai_neurosql.networks import ConvGenerator
from tests.helpers import indexed_dataset, shapes


def _setup(n=120):
    images, _ = shapes(n, size=16, seed=2)
    torch.manual_seed(0)
    generator = ConvGenerator(2, 3, spatial_size=16, channels=(16, 8)).eval()
    return images, generator


def test_sparse_path_matches_dense_optimum_with_certificate():
    images, generator = _setup()
    dense_bank, sparse_bank = LatentBank.create(120, 3, seed=1), LatentBank.create(120, 3, seed=1)
    dense = assign_codes(generator, dense_bank, images, settings={"momentum": 1.0})
    # a 4 KB budget forces the sparse path: 10 candidates per row, certified against all excluded entries
    sparse = assign_codes(generator, sparse_bank, images,
                          settings={"momentum": 1.0, "max_dense_bytes": 4096, "candidates": 10})
    assert dense["sparse"] == 0 and sparse["sparse"] == 1 and sparse["certified"] == 1
    cost = pairwise_cost(images, decode(generator, dense_bank.lattice_points)).double().numpy()
    rows, cols = linear_sum_assignment(cost)
    optimum = cost[rows, cols].sum()
    got = cost[np.arange(120), sparse_bank.assignment.numpy()].sum()
    assert got - optimum <= sparse["gap_bound"] + 1e-6
    assert sparse["cost"] * 120 == pytest.approx(got, abs=1e-4)
    assert dense["cost"] * 120 == pytest.approx(optimum, abs=1e-4)


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


def test_collect_images_sorts_and_checks():
    images, _ = shapes(10, size=16, seed=0)
    ds = indexed_dataset(images)
    loader = [ds[i] for i in [3, 1, 2, 0, 4, 5, 6, 7, 8, 9]]
    batches = [{"image": torch.stack([d["image"] for d in loader[i : i + 4]]),
                "index": torch.tensor([d["index"] for d in loader[i : i + 4]])} for i in range(0, 10, 4)]
    got, rows = collect_images(batches, 10)
    assert rows.tolist() == list(range(10)) and torch.equal(got, images)
    with pytest.raises(ValueError, match="exactly once"):
        collect_images(batches[:1], 10)

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_neurosql import LatentBank, pairwise_cost
from monai_neurosql.assignment import assign_codes
from monai_neurosql.generate import decode
from monai_neurosql.networks import ConvGenerator
from tests.helpers import shapes


def _setup(n=120):
    images, _ = shapes(n, size=16, seed=2)
    torch.manual_seed(0)
    generator = ConvGenerator(2, 3, spatial_size=16, channels=(16, 8)).eval()
    return images, generator


def test_sparse_path_matches_dense_optimum_with_certificate():
    images, generator = _setup()
    dense_bank, sparse_bank = LatentBank.create(120, 3, seed=1), LatentBank.create(120, 3, seed=1)
    dense = assign_codes(generator, dense_bank, images, settings={"momentum": 1.0, "cost": "ssim_l1"})
    # a 4 KB budget forces the sparse path: 10 candidates per row, certified against all excluded entries
    sparse = assign_codes(generator, sparse_bank, images,
                          settings={"momentum": 1.0, "cost": "ssim_l1", "max_dense_bytes": 4096, "candidates": 10})
    assert dense["sparse"] == 0 and sparse["sparse"] == 1 and sparse["certified"] == 1
    cost = pairwise_cost(images, decode(generator, dense_bank.lattice_points)).double().numpy()
    rows, cols = linear_sum_assignment(cost)
    optimum = cost[rows, cols].sum()
    got = cost[np.arange(120), sparse_bank.assignment.numpy()].sum()
    assert got - optimum <= sparse["gap_bound"] + 1e-6
    assert sparse["cost"] * 120 == pytest.approx(got, abs=1e-4)
    assert dense["cost"] * 120 == pytest.approx(optimum, abs=1e-4)

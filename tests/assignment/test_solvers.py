from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import monai_neurosql.assignment.solvers as assignment_module
from monai_neurosql import assignment_cost, solve_assignment
from monai_neurosql.assignment.solvers import _greedy_windowed

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _literal_greedy(cost: np.ndarray) -> np.ndarray:
    """Algorithm 3 of the paper, line by line."""
    m, k = cost.shape
    assigned: set[int] = set()
    pi = np.zeros(m, dtype=np.int64)
    for i in range(m):
        c_min, j_star = np.inf, 0
        for j in range(k):
            if j not in assigned and cost[i, j] < c_min:
                c_min, j_star = cost[i, j], j
        pi[i] = j_star
        assigned.add(j_star)
    return pi


def _costs(seed: int):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    return {
        "random": rng.random((50, 50)),
        "structured": ((a[:, None] - b[None]) ** 2).sum(-1),
        "ties": rng.integers(0, 3, size=(40, 40)).astype(np.float64),
        "rectangular": rng.random((17, 40)),
        "single": np.array([[2.0, 1.0, 3.0]]),
    }


def _check_permutation(col: torch.Tensor, shape) -> None:
    assert col.dtype == torch.long and col.shape == (shape[0],)
    assert len(set(col.tolist())) == shape[0] and col.min() >= 0 and col.max() < shape[1]


@pytest.mark.parametrize("name", list(_costs(0)))
@pytest.mark.parametrize("method", ["hungarian", "scipy", "lapjv"])
def test_exact_methods_reach_scipy_optimum(name, method):
    for seed in range(3):
        cost = _costs(seed)[name]
        col = solve_assignment(cost, method=method)
        _check_permutation(col, cost.shape)
        rows, cols = linear_sum_assignment(cost)
        assert cost[np.arange(cost.shape[0]), col.numpy()].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-9)


def test_exact_on_float32_torch_and_large_structured():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    cost = torch.from_numpy(((a[:, None] - b[None]) ** 2).sum(-1)).float()
    col = solve_assignment(cost)
    _check_permutation(col, cost.shape)
    rows, cols = linear_sum_assignment(cost.double().numpy())
    optimum = cost.double().numpy()[rows, cols].sum()
    assert assignment_cost(cost, col, "sum").item() == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("name", list(_costs(0)))
def test_greedy_matches_literal_algorithm_3(name):
    for seed in range(3):
        cost = _costs(seed)[name]
        expected = _literal_greedy(cost)
        np.testing.assert_array_equal(solve_assignment(cost, "greedy").numpy(), expected)
        np.testing.assert_array_equal(solve_assignment(torch.from_numpy(cost), "greedy").numpy(), expected)
        # the windowed device path gives the same answer
        np.testing.assert_array_equal(_greedy_windowed(torch.from_numpy(cost)).numpy(), expected)


def test_greedy_is_suboptimal_but_valid():
    cost = _costs(0)["structured"]
    greedy = solve_assignment(cost, "greedy")
    exact = solve_assignment(cost)
    _check_permutation(greedy, cost.shape)
    assert assignment_cost(torch.from_numpy(cost), greedy) > assignment_cost(torch.from_numpy(cost), exact)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["hungarian", "scipy", "lapjv", "greedy", "auction"])
def test_output_device_and_integer_input(device, method):
    cost = torch.tensor([[4, 1, 3], [2, 0, 5], [3, 2, 2]], device=device)
    col = solve_assignment(cost, method)
    assert col.device == cost.device
    if method != "greedy":
        assert col.tolist() == [1, 0, 2]


def test_empty_and_docstring():
    assert solve_assignment(np.zeros((0, 3))).shape == (0,)
    failures, _ = doctest.testmod(assignment_module, verbose=False)
    assert failures == 0


@pytest.mark.parametrize("bad,match", [
    (np.zeros(3), "2D"),
    (np.zeros((2, 2, 2)), "2D"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
    (np.zeros((3, 2)), "more rows than columns"),
])
def test_errors(bad, match):
    for method in ("hungarian", "greedy", "auction"):
        with pytest.raises(ValueError, match=match):
            solve_assignment(bad, method)
        with pytest.raises(ValueError, match=match):
            solve_assignment(torch.from_numpy(bad), method)


def test_bad_method_and_type():
    with pytest.raises(ValueError, match="method"):
        solve_assignment(np.zeros((2, 2)), "simplex")
    with pytest.raises(TypeError, match="ndarray"):
        solve_assignment([[0.0, 1.0], [1.0, 0.0]])

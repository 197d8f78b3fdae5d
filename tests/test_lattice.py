from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri

from monai_neurosql import QuantileLattice, solve_assignment

CONSTRUCTORS = ["sobol_gaussian", "uniform_cube", "uniform_ball"]


@pytest.mark.parametrize("kind", CONSTRUCTORS)
@pytest.mark.parametrize("n,d", [(1, 1), (3, 2), (100, 5), (1000, 16), (1025, 3)])
def test_shape_determinism_no_duplicates(kind, n, d):
    lattice = getattr(QuantileLattice, kind)(n, d, seed=3)
    assert lattice.points.shape == (n, d) and lattice.points.dtype == torch.float32
    assert len(lattice) == n and lattice.dim == d
    assert torch.isfinite(lattice.points).all()
    again = getattr(QuantileLattice, kind)(n, d, seed=3)
    torch.testing.assert_close(lattice.points, again.points, rtol=0, atol=0)
    assert torch.unique(lattice.points, dim=0).shape[0] == n
    if n > 1:
        other = getattr(QuantileLattice, kind)(n, d, seed=4)
        assert not torch.equal(lattice.points, other.points)


def test_support_and_marginals():
    gauss = QuantileLattice.sobol_gaussian(4096, 4, seed=0).points
    assert gauss.mean(0).abs().max() < 0.02 and (gauss.std(0) - 1).abs().max() < 0.02
    cube = QuantileLattice.uniform_cube(4096, 4, seed=0).points
    assert cube.min() > 0 and cube.max() < 1 and (cube.mean(0) - 0.5).abs().max() < 0.01
    ball = QuantileLattice.uniform_ball(4096, 3, seed=0).points
    radius = ball.norm(dim=1)
    assert radius.max() < 1
    # uniform in the ball: P(|z| < r) = r^d
    for r in (0.3, 0.5, 0.8):
        assert abs((radius < r).float().mean().item() - r**3) < 0.01
    # directions are balanced
    assert ball.mean(0).abs().max() < 0.02


def test_quantiles_1d_are_inverse_cdf_values():
    n = 9
    probs = np.arange(1, n + 1) / (n + 1)
    gauss = QuantileLattice.quantiles_1d(n, "gaussian")
    np.testing.assert_allclose(gauss.points[:, 0].numpy(), ndtri(probs), rtol=1e-6)
    uni = QuantileLattice.quantiles_1d(n, "uniform_cube")
    np.testing.assert_allclose(uni.points[:, 0].numpy(), probs, rtol=1e-6)
    ball = QuantileLattice.quantiles_1d(n, "uniform_ball")
    np.testing.assert_allclose(ball.points[:, 0].numpy(), 2 * probs - 1, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("prior", ["gaussian", "uniform_cube", "uniform_ball"])
def test_sample_is_seeded_and_follows_prior(prior):
    lattice = QuantileLattice(torch.zeros(2, 3) + torch.arange(2.0)[:, None], prior=prior)
    a = lattice.sample(2000, generator=torch.Generator().manual_seed(0))
    b = lattice.sample(2000, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2000, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if prior == "gaussian":
        assert abs(a.std().item() - 1) < 0.05
    elif prior == "uniform_cube":
        assert a.min() >= 0 and a.max() < 1
    else:
        assert a.norm(dim=1).max() < 1 and abs((a.norm(dim=1) < 0.5).float().mean().item() - 0.125) < 0.03


def test_create_by_name_and_errors():
    assert QuantileLattice.create("gaussian", 8, 2).prior == "gaussian"
    assert QuantileLattice.create("uniform_ball", 8, 2).prior == "uniform_ball"
    assert QuantileLattice.create("quantiles_1d", 8, 1).dim == 1
    with pytest.raises(ValueError, match="unknown lattice kind"):
        QuantileLattice.create("halton", 8, 2)
    with pytest.raises(ValueError, match="d=1"):
        QuantileLattice.create("quantiles_1d", 8, 2)
    with pytest.raises(ValueError, match="positive"):
        QuantileLattice.sobol_gaussian(0, 2)
    with pytest.raises(ValueError, match="positive"):
        QuantileLattice.uniform_cube(4, 0)
    with pytest.raises(ValueError, match="prior"):
        QuantileLattice(torch.zeros(2, 2), prior="cauchy")
    with pytest.raises(ValueError, match="finite"):
        QuantileLattice(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        QuantileLattice(torch.zeros(3))


def _assignment_error(z: np.ndarray, q: np.ndarray) -> float:
    """min over permutations of mean |Z_i - Q_pi(i)|^2 (paper eq. 3)."""
    cost = ((z[:, None, :] - q[None, :, :]) ** 2).sum(-1)
    col = solve_assignment(cost).numpy()
    return float(cost[np.arange(len(z)), col].mean())


def test_approximation_error_falls_like_one_over_n_in_1d():
    # paper eq. 3: min_pi (1/n) sum |Z_i - Q_pi(i)|^2 = O_p(1/n) for d = 1 (sorted matching is optimal)
    rng = np.random.default_rng(0)
    sizes = [64, 256, 1024, 4096]
    errors = []
    for n in sizes:
        q = QuantileLattice.quantiles_1d(n).points[:, 0].numpy().astype(np.float64)
        reps = [np.mean((np.sort(rng.standard_normal(n)) - q) ** 2) for _ in range(40)]
        errors.append(np.mean(reps))
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert -1.25 < slope < -0.75, (errors, slope)
    # the assignment solver finds the same optimum as sorting
    z = rng.standard_normal(256)
    q = QuantileLattice.quantiles_1d(256).points.numpy().astype(np.float64)
    assert math.isclose(_assignment_error(z[:, None], q), np.mean((np.sort(z) - q[:, 0]) ** 2), rel_tol=1e-9)


@pytest.mark.parametrize("kind,prior_sampler", [
    ("sobol_gaussian", lambda rng, n, d: rng.standard_normal((n, d))),
    ("uniform_ball", None),
])
def test_multivariate_assignment_error_falls_with_n(kind, prior_sampler):
    # Proposition 1: min_pi |Z - Q_pi|^2 / n -> 0 as n grows (d = 2)
    rng = np.random.default_rng(1)
    errors = []
    for n in (64, 256, 1024):
        q = getattr(QuantileLattice, kind)(n, 2, seed=0)
        if prior_sampler is None:
            z = q.sample(n, generator=torch.Generator().manual_seed(n)).double().numpy()
        else:
            z = prior_sampler(rng, n, 2)
        errors.append(_assignment_error(z, q.points.double().numpy()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.35 * errors[0], errors


def _gauss_kernel_mean(u: torch.Tensor, v: torch.Tensor) -> float:
    return torch.exp(-torch.cdist(u, v).pow(2) / 2).mean().item()


@pytest.mark.parametrize("kind,draw", [
    ("sobol_gaussian", lambda rng, n, d: rng.standard_normal((n, d))),
    ("uniform_cube", lambda rng, n, d: rng.random((n, d))),
])
def test_lattice_matches_prior_better_than_iid_sample(kind, draw):
    rng = np.random.default_rng(0)
    n, d = 256, 3
    reference = torch.from_numpy(draw(rng, 3000, d))
    ref_term = _gauss_kernel_mean(reference, reference)

    def mmd2(points: torch.Tensor) -> float:  # squared MMD to the prior (estimated by the reference sample)
        points = points.double()
        return _gauss_kernel_mean(points, points) + ref_term - 2 * _gauss_kernel_mean(points, reference)

    lattice_mmd = mmd2(getattr(QuantileLattice, kind)(n, d, seed=0).points)
    iid_mmd = [mmd2(torch.from_numpy(draw(rng, n, d))) for _ in range(10)]
    # a quasi-random lattice sits far closer to its prior than any of 10 i.i.d. samples of the same size
    assert lattice_mmd < 0.5 * min(iid_mmd), (lattice_mmd, iid_mmd)

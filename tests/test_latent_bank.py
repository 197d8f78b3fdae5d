from __future__ import annotations

import io

import pytest
import torch

from monai_neurosql import QuantileLattice
from monai_neurosql.latent_bank import LatentBank, group_positions


def test_random_init_is_a_seeded_permutation_of_the_lattice():
    bank = LatentBank.create(50, 3, seed=1)
    assert sorted(bank.assignment.tolist()) == list(range(50))
    torch.testing.assert_close(bank.codes, bank.lattice_points[bank.assignment])
    again = LatentBank.create(50, 3, seed=1)
    assert torch.equal(bank.assignment, again.assignment)
    assert not torch.equal(bank.assignment, LatentBank.create(50, 3, seed=2).assignment)
    identity = LatentBank.create(5, 2, init="identity")
    assert identity.assignment.tolist() == list(range(5))


def test_momentum_update_and_moved_fraction():
    bank = LatentBank.create(6, 2, seed=0, init="identity")
    old = bank.codes.clone()
    rows, target = torch.tensor([0, 1, 2]), torch.tensor([1, 0, 2])
    moved = bank.update(rows, target, momentum=0.7)
    assert moved == pytest.approx(2 / 3)
    expected = 0.7 * bank.lattice_points[target] + 0.3 * old[rows]
    torch.testing.assert_close(bank.codes[rows], expected)
    torch.testing.assert_close(bank.codes[3:], old[3:])
    assert bank.assignment[:3].tolist() == [1, 0, 2]
    bank.update(rows, target, momentum=1.0)
    torch.testing.assert_close(bank.codes[rows], bank.lattice_points[target])
    with pytest.raises(ValueError, match="momentum"):
        bank.update(rows, target, momentum=0.0)
    with pytest.raises(ValueError, match="same shape"):
        bank.update(rows, target[:2])


def test_class_conditional_bank():
    labels = torch.tensor([0, 2, 2, 0, 2, 5])
    bank = LatentBank.class_conditional(labels, d=3, seed=0)
    assert bank.n == 6 and bank.groups() == [0, 2, 5]
    assert torch.equal(bank.lattice_groups[bank.assignment], labels)  # codes start within their class
    # every class lattice is a full lattice of the prior
    torch.testing.assert_close(bank.lattice_points[bank.lattice_rows(2)],
                               QuantileLattice.sobol_gaussian(3, 3, seed=2).points)
    with pytest.raises(ValueError, match="crossed classes"):
        bank.update(torch.tensor([0]), bank.lattice_rows(2)[:1])
    with pytest.raises(ValueError, match="as many lattice points"):
        LatentBank(QuantileLattice.sobol_gaussian(3, 2), data_groups=[0, 0, 1], lattice_groups=[0, 1, 1])


def test_identity_init_pairs_rows_and_points_within_each_class():
    # classes interleaved differently in the data and on the lattice: identity must still stay within classes
    bank = LatentBank(QuantileLattice.sobol_gaussian(3, 2), init="identity", data_groups=[0, 0, 1],
                      lattice_groups=[1, 0, 0])
    assert bank.assignment.tolist() == [1, 2, 0]
    assert torch.equal(bank.lattice_groups[bank.assignment], bank.data_groups)


def test_group_positions():
    labels = torch.tensor([2, 0, 2, 2, 5])
    assert [(g, p.tolist()) for g, p in group_positions(labels)] == [(0, [1]), (2, [0, 2, 3]), (5, [4])]
    assert [(g, p.tolist()) for g, p in group_positions(labels, [5, 1])] == [(5, [4]), (1, [])]
    bank = LatentBank.class_conditional(labels, d=2)
    assert [(g, r.tolist(), sorted(bank.lattice_groups[q].tolist())) for g, r, q in bank.iter_groups()] == [
        (0, [1], [0]), (2, [0, 2, 3], [2, 2, 2]), (5, [4], [5])]


def test_pca_init_orders_codes_like_the_data():
    # images that are a linear function of 2 latent factors: PCA start recovers the factor ordering
    g = torch.Generator().manual_seed(0)
    n = 200
    factors = torch.randn(n, 2, generator=g)
    basis = torch.randn(2, 1, 8, 8, generator=g)
    images = torch.einsum("nk,kchw->nchw", factors, basis)
    bank = LatentBank.create(n, 2, seed=0)
    bank.init_pca(images)
    assert sorted(bank.assignment.tolist()) == list(range(n))
    # codes explain the factors far better than a random permutation would
    x = torch.cat([bank.codes, torch.ones(n, 1)], 1)
    residual = factors - x @ torch.linalg.lstsq(x, factors).solution
    assert residual.pow(2).mean() < 0.2 * factors.var()
    with pytest.raises(ValueError, match="one image per bank row"):
        bank.init_pca(images[:10])


def test_state_dict_roundtrip_with_weights_only():
    bank = LatentBank(QuantileLattice.uniform_ball(10, 2, seed=0), seed=3)
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    other = LatentBank.create(10, 2, seed=9)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert other.prior == "uniform_ball" and torch.equal(other.codes, bank.codes)
    assert other.lattice.prior == "uniform_ball"
    with pytest.raises(ValueError, match="init"):
        LatentBank.create(4, 2, init="pca")

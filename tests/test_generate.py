from __future__ import annotations

import pytest
import torch

from monai_neurosql import QuantileLattice, SSIML1Loss, pairwise_cost
from monai_neurosql.generate import decode, embed, generate
from monai_neurosql.networks import ConvGenerator


def _net(**kw):
    torch.manual_seed(0)
    return ConvGenerator(2, 4, spatial_size=16, channels=(16, 8), **kw)


def test_generate_is_seeded_and_restores_train_mode():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(32, 4)
    a = generate(net, 5, lattice, seed=3, batch_size=2)
    b = generate(net, 5, lattice, seed=3)
    assert a.shape == (5, 1, 16, 16) and a.device.type == "cpu" and net.training
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, generate(net, 5, lattice, seed=4))
    with pytest.raises(ValueError, match="positive"):
        generate(net, 0, lattice)


def test_generate_class_conditional_labels():
    net = _net(num_classes=3)
    lattice = QuantileLattice.sobol_gaussian(8, 4)
    assert generate(net, 4, lattice, labels=2).shape == (4, 1, 16, 16)
    assert generate(net, 3, lattice, labels=[0, 1, 2]).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="one label or one per sample"):
        generate(net, 3, lattice, labels=[0, 1])
    assert decode(net, lattice.points[:3], 1, batch_size=1).shape == (3, 1, 16, 16)


def test_embed_improves_on_random_codes():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(64, 4)
    target_codes = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    images = decode(net, target_codes)
    loss = SSIML1Loss(2, reduction="none")
    codes0 = embed(net, images, lattice, steps=0)
    codes = embed(net, images, lattice, steps=40, lr=0.05)
    random_loss = loss(decode(net, torch.randn(6, 4)), images).mean()
    lattice_loss = loss(decode(net, codes0), images).mean()
    refined_loss = loss(decode(net, codes), images).mean()
    assert codes.shape == (6, 4)
    assert refined_loss <= lattice_loss < random_loss
    assert all(p.requires_grad for p in net.parameters())  # generator left as it was


def test_embed_searches_the_lattice_under_the_given_loss():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(64, 4)
    images = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    outputs = decode(net, lattice.points)
    for loss in (SSIML1Loss(2, win_size=5, reduction="none"), SSIML1Loss(2, reduction="none")):
        expected = lattice.points[pairwise_cost(images, outputs, loss=loss).argmin(1)]
        torch.testing.assert_close(embed(net, images, lattice, steps=0, loss_function=loss), expected)
    small = embed(net, images, lattice, steps=0, loss_function=SSIML1Loss(2, win_size=5, reduction="none"))
    assert not torch.equal(small, embed(net, images, lattice, steps=0))  # the window changes the best points

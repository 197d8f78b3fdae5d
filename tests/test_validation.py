from __future__ import annotations

import torch

from monai_neurosql import QuantileLattice
from monai_neurosql.validation import heldout_assignment_cost


class _Lookup(torch.nn.Module):
    """A 'generator' that returns the stored image nearest to z[0] (a perfect memorizer of 1D codes)."""

    def __init__(self, images: torch.Tensor, codes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images)
        self.register_buffer("keys", codes)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, labels=None):
        return self.images[torch.cdist(z, self.keys).argmin(1)] + 0 * self.dummy


def test_heldout_assignment_cost_ranks_generators():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 16, 16, generator=g)
    lattice = QuantileLattice.quantiles_1d(20)
    perfect = _Lookup(images, lattice.points)
    wrong = _Lookup(torch.rand(20, 1, 16, 16, generator=g), lattice.points)
    good = heldout_assignment_cost(perfect, images, "gaussian", 1, seed=0)
    bad = heldout_assignment_cost(wrong, images, "gaussian", 1, seed=0)
    # the held-out lattice is not the lookup's keys, but each key's nearest lattice point is close enough
    assert good < 0.5 * bad

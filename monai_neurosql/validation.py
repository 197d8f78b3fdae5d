"""The validation loss of NeuroSQL: the optimal assignment cost of held-out images, which have no codes.

It lives here, beside sampling and inversion and apart from :mod:`monai_neurosql.metrics`, because it is a
NeuroSQL quantity (a fresh lattice, the generator, the training cost and the exact solver), not a metric of
samples that baselines share; :class:`~monai_neurosql.handlers.ValidationAssignmentCost` runs it in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .assignment.solvers import solve_assignment
from .cost import pairwise_cost
from .generate import _device_of, decode
from .lattice import QuantileLattice

__all__ = ["heldout_assignment_cost"]


@torch.no_grad()
def heldout_assignment_cost(
    generator: nn.Module,
    images: torch.Tensor,
    prior: str,
    latent_size: int,
    labels: Sequence[int] | torch.Tensor | None = None,
    seed: int = 12345,
    method: str = "hungarian",
    cost: str = "ssim_l1",
    batch_size: int = 256,
) -> float:
    """Validation loss for held-out images, which have no codes: their optimal assignment cost.

    Held-out images are matched to a fresh lattice of their own size (same prior and dimension, fixed seed) by
    the same exact assignment as in training, and the mean matched cost is returned:
    ``min_pi (1/v) sum_i l(X_i, G(Q_pi(i)))``. It is low only when the generator's image of the prior covers
    the held-out distribution, so it falls while the model generalizes and rises when it overfits: a fair
    criterion for early stopping (paper appendix L) with no encoder. For class-conditional generators each class
    is matched to its own lattice.

    Args:
        generator: the generator.
        images: ``v x C x [SPATIAL]`` held-out images.
        prior: the training lattice's prior (``bank.prior``).
        latent_size: ``d``.
        labels: classes of the held-out images for conditional generators.
        seed: lattice seed (fixed, so the criterion is comparable across epochs).
        method: assignment method.
        cost: cost kind (``pairwise_cost``).
        batch_size: decoding batch size.
    """
    device = _device_of(generator)
    images = images.to(device).float()
    labels_t = None if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    groups = [None] if labels_t is None else torch.unique(labels_t).tolist()
    total = 0.0
    for g in groups:
        rows = torch.arange(images.shape[0]) if g is None else torch.nonzero(labels_t == g).flatten()
        lattice = QuantileLattice.create(prior, len(rows), latent_size, seed + (0 if g is None else g))
        decoded = decode(generator, lattice.points, g, batch_size)
        c = pairwise_cost(images[rows.to(device)], decoded, kind=cost)
        col = solve_assignment(c, method)
        total += c[torch.arange(len(rows), device=c.device), col.to(c.device)].double().sum().item()
    return total / images.shape[0]

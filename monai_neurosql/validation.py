"""The validation loss of NeuroSQL: the optimal assignment cost of held-out images, which have no codes.

It lives here, beside sampling and inversion and apart from :mod:`monai_neurosql.metrics`, because it is a
NeuroSQL quantity (a fresh lattice, the generator, the training cost and the assignment step), not a metric of
samples that the baselines share; :class:`~monai_neurosql.handlers.ValidationAssignmentCost` runs it in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .assignment import AssignmentSettings, assign_codes
from .generate import device_of
from .latent_bank import LatentBank

__all__ = ["VALIDATION_COST", "heldout_assignment_cost", "validation_settings"]

#: Cost kind of the held-out validation cost when no settings are given: the training loss (SSIM+L1), so that early
#: stopping and ``best.pt`` judge the model in the loss it is trained on, whatever cost the assignment uses.
VALIDATION_COST = "ssim_l1"


def validation_settings(settings: AssignmentSettings | Mapping[str, Any] | None = None) -> AssignmentSettings:
    """The settings of a held-out validation cost, with the cost kind :data:`VALIDATION_COST` unless one is named.

    Settings that name no cost (``None``, a dict without ``"cost"`` such as bundle JSON's ``{"method": "greedy"}``,
    or an :class:`~monai_neurosql.assignment.AssignmentSettings` built without ``cost``) get
    ``cost=VALIDATION_COST``; settings naming a cost are used as given. The training assignment's default cost is
    ``"l2"`` (cheap, measured as good for sample quality); the validation cost keeps measuring in the training loss
    unless a caller asks for another cost explicitly.

    Raises:
        ValueError, TypeError: as :meth:`AssignmentSettings.coerce <monai_neurosql.assignment.AssignmentSettings.coerce>`.
    """
    return AssignmentSettings.coerce(settings).with_default_cost(VALIDATION_COST)


@torch.no_grad()
def heldout_assignment_cost(
    generator: nn.Module,
    images: torch.Tensor,
    prior: str,
    latent_size: int,
    labels: Sequence[int] | torch.Tensor | None = None,
    seed: int = 12345,
    settings: AssignmentSettings | Mapping[str, Any] | None = None,
) -> float:
    """Validation loss for held-out images, which have no codes: their optimal assignment cost.

    Held-out images are matched to a fresh lattice of their own size (same prior and dimension, fixed seed) by
    the same assignment step as in training (:func:`~monai_neurosql.assignment.assign_codes` on a fresh
    :class:`~monai_neurosql.LatentBank`), and the mean matched cost is returned:
    ``min_pi (1/v) sum_i l(X_i, G(Q_pi(i)))``. It is low only when the generator's image of the prior covers
    the held-out distribution, so it falls while the model generalizes and rises when it overfits: a fair
    criterion for early stopping (paper appendix L) with no encoder. For class-conditional generators each class
    is matched to its own lattice (seed ``seed + class``).

    Args:
        generator: the generator.
        images: ``v x C x [SPATIAL]`` held-out images.
        prior: the training lattice's prior (``bank.prior``).
        latent_size: ``d``.
        labels: classes of the held-out images for conditional generators.
        seed: lattice seed (fixed, so the criterion is comparable across epochs).
        settings: :class:`~monai_neurosql.assignment.AssignmentSettings` (or a dict): solver, cost kind, the
            loss that defines the cost (pass the trainer's, e.g. ``settings.with_loss(trainer.loss_function)``),
            decode batch size. Default (``None``), or a dict naming no cost: the SSIM+L1 cost
            (:data:`VALIDATION_COST`, the training loss; default ``SSIML1Loss``), not the assignment's default
            ``"l2"`` (:func:`validation_settings`).

    Returns:
        The mean matched cost (a Python float).

    Example::

        value = heldout_assignment_cost(generator, val_images, bank.prior, bank.dim,
                                        settings=AssignmentSettings(loss=SSIML1Loss(2, win_size=7)))
    """
    images = images.to(device_of(generator)).float()
    if labels is None:
        bank = LatentBank.create(images.shape[0], latent_size, kind=prior, seed=seed)
    else:
        bank = LatentBank.class_conditional(labels, latent_size, kind=prior, seed=seed)
    stats = assign_codes(generator, bank.to(images.device), images, conditional=labels is not None,
                         settings=validation_settings(settings), local=True)
    return stats["cost"]

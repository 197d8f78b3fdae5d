"""NeuroSQL: encoder-free deep generative modelling by quantile assignment, as a MONAI plugin."""

from __future__ import annotations

from .assignment import ASSIGNMENT_METHODS, assignment_cost, solve_assignment
from .generate import decode, embed, generate, heldout_assignment_cost
from .latent_bank import LatentBank
from .lattice import PRIORS, QuantileLattice
from .losses import COST_KINDS, SSIML1Loss, SSIMWindow, pairwise_cost

__version__ = "0.1.0"

__all__ = [
    "ASSIGNMENT_METHODS",
    "COST_KINDS",
    "LatentBank",
    "PRIORS",
    "QuantileLattice",
    "SSIML1Loss",
    "SSIMWindow",
    "assignment_cost",
    "decode",
    "embed",
    "generate",
    "heldout_assignment_cost",
    "pairwise_cost",
    "solve_assignment",
]

"""NeuroSQL: encoder-free deep generative modelling by quantile assignment, as a MONAI plugin."""

from __future__ import annotations

# the assignment package first: latent_bank and generate import its solvers, and its step imports them back
from .assignment import ASSIGNMENT_METHODS, AssignmentSettings, assignment_cost, solve_assignment
from .cost import COST_KINDS, pairwise_cost
from .generate import decode, embed, generate
from .latent_bank import LatentBank
from .lattice import PRIORS, QuantileLattice
from .losses import SSIML1Loss
from .ssim import SSIMWindow
from .validation import heldout_assignment_cost

__version__ = "0.1.0"

__all__ = [
    "ASSIGNMENT_METHODS",
    "COST_KINDS",
    "PRIORS",
    "AssignmentSettings",
    "LatentBank",
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

from __future__ import annotations

from .checkpoint_saver import AtomicCheckpointSaver
from .quantile_assignment import QuantileAssignmentHandler, assign_codes, collect_images
from .validation_assignment import ValidationAssignmentCost

__all__ = [
    "AtomicCheckpointSaver",
    "QuantileAssignmentHandler",
    "ValidationAssignmentCost",
    "assign_codes",
    "collect_images",
]

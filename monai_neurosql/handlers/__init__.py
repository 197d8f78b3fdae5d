from __future__ import annotations

from .checkpoint_saver import AtomicCheckpointSaver
from .divergence_guard import DivergenceGuard, TrainingDivergedError
from .sample_grid_writer import SampleGridWriter
from .generative_metrics import GenerativeMetricsHandler
from .quantile_assignment import QuantileAssignmentHandler, assign_codes, collect_images
from .validation_assignment import ValidationAssignmentCost

__all__ = [
    "AtomicCheckpointSaver",
    "DivergenceGuard",
    "GenerativeMetricsHandler",
    "QuantileAssignmentHandler",
    "SampleGridWriter",
    "TrainingDivergedError",
    "ValidationAssignmentCost",
    "assign_codes",
    "collect_images",
]

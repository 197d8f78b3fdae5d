from __future__ import annotations

from .checkpoint_saver import AtomicCheckpointSaver
from .divergence_guard import DivergenceGuard, TrainingDivergedError
from .generative_metrics import GenerativeMetricsHandler
from .quantile_assignment import QuantileAssignmentHandler
from .sample_grid_writer import SampleGridWriter
from .validation_assignment import ValidationAssignmentCost

__all__ = [
    "AtomicCheckpointSaver",
    "DivergenceGuard",
    "GenerativeMetricsHandler",
    "QuantileAssignmentHandler",
    "SampleGridWriter",
    "TrainingDivergedError",
    "ValidationAssignmentCost",
]

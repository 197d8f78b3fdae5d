from __future__ import annotations

from .events import AssignmentEvents
from .neurosql_trainer import NeuroSQLTrainer, prepare_neurosql_batch

__all__ = ["AssignmentEvents", "NeuroSQLTrainer", "prepare_neurosql_batch"]

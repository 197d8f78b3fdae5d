"""The comparison command and its parts: data, cells (resumable after a kill: ``resume``), tables, CLI (``python -m monai_neurosql.benchmark``), the
feature-space check (``python -m monai_neurosql.benchmark.feature_space``) and the low-data augmentation
experiment (``python -m monai_neurosql.benchmark.augmentation``)."""

from __future__ import annotations

from .cells import (
    BACKBONES,
    DEFAULT_VARIANTS,
    LEARNING_RATES,
    MODELS,
    PROTOCOLS,
    VARIANTS,
    build_generator,
    run_cell,
    scored_count,
)
from .cli import main
from .data import dataset_name, load_benchmark_data
from .memory import peak_rss_mib
from .tables import comparison_grids, control_report, summarize

__all__ = [
    "BACKBONES",
    "DEFAULT_VARIANTS",
    "LEARNING_RATES",
    "MODELS",
    "PROTOCOLS",
    "VARIANTS",
    "build_generator",
    "comparison_grids",
    "control_report",
    "dataset_name",
    "load_benchmark_data",
    "main",
    "peak_rss_mib",
    "run_cell",
    "scored_count",
    "summarize",
]

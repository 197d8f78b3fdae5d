"""How one quantile assignment is computed: the one settings object of the handler, the step and validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..cost import COST_KINDS, DEFAULT_MAX_BYTES, pairwise_cost
from ..losses import SSIML1Loss
from .solvers import ASSIGNMENT_METHODS

__all__ = ["ASSIGNMENT_COST", "DEFAULT_MAX_DENSE_BYTES", "AssignmentSettings"]

#: Cost kind of the training assignment when the settings name none (``cost=None``): the mean squared difference,
#: measured best for users (docs/benchmarks.md, "Speed"); the paper's is ``"ssim_l1"``.
ASSIGNMENT_COST = "l2"

#: Largest dense cost matrix built before switching to sparse candidates (bytes; 4 GiB = 32k x 32k float32).
DEFAULT_MAX_DENSE_BYTES = 4 * 2**30


@dataclass
class AssignmentSettings:
    """Settings of one quantile assignment ``C[i, k] = l(X_i, G(Q_k))``, solve, momentum update (Algorithm 1
    lines 5-7, Algorithm 2 lines 9-15).

    :func:`~monai_neurosql.assignment.assign_codes` reads them;
    :class:`~monai_neurosql.handlers.QuantileAssignmentHandler` (which decides *when* and *on which images*) and
    :class:`~monai_neurosql.handlers.ValidationAssignmentCost` pass them on. A new lever for *how* one
    assignment is computed is one field here, checked in ``__post_init__``; a lever of the cost itself (e.g. a
    lower resolution) is applied in :meth:`cost_matrix`, the only place the step computes costs.

    Args:
        method: solver, one of :data:`~monai_neurosql.assignment.ASSIGNMENT_METHODS`. Default ``"hungarian"``
            (exact).
        momentum: ``rho`` of the update ``Z <- rho Q[pi] + (1 - rho) Z``, in ``(0, 1]``. Default 0.7 (paper).
        cost: cost kind of the assignment, one of :data:`~monai_neurosql.COST_KINDS`, or ``None`` (default): the
            default of the place the settings are used, filled in there by :meth:`with_default_cost`, so that a
            settings object and the dict of the same fields mean the same: the training assignment (the handler, :func:`assign_codes`) uses
            :data:`ASSIGNMENT_COST` ``"l2"``, the held-out validation cost the training loss ``"ssim_l1"``
            (:data:`~monai_neurosql.validation.VALIDATION_COST`). ``"l2"`` (mean
            squared difference: one matrix product, 400-1000x cheaper per pair than ``"ssim_l1"`` at 28-128 px),
            measured within seed noise of the paper's ``"ssim_l1"`` in sample quality at 28 px and 64 px
            (``docs/benchmarks.md``, speed section: Fashion-MNIST and the demo brains, 3 seeds, domain-feature KID;
            128 px not yet run); the training loss stays SSIM+L1 either way. ``"ssim_l1"`` is the paper's setting
            (Algorithm 1 uses the training loss in both steps): ``AssignmentSettings(cost="ssim_l1")``.
        loss: the :class:`~monai_neurosql.SSIML1Loss` whose window, constants and weight define ``"ssim_l1"``.
            ``None`` (default): the trainer's loss, filled in by the handlers (:meth:`with_loss`), so that the
            assignment minimizes exactly the training loss; outside a trainer, ``SSIML1Loss`` defaults.
        max_cost_bytes: scratch memory bound of one :func:`~monai_neurosql.pairwise_cost` call. Default 1 GiB.
        decode_batch_size: batch size of ``G(Q)``. Default 256.
        block_rows: cost rows built per block (progress granularity, bounded scratch memory). Default 1024.
        max_dense_bytes: largest dense cost matrix (full batch); above it each row keeps its ``candidates``
            cheapest lattice points and the sparse certified solver runs
            (:func:`~monai_neurosql.assignment.sparse_certified_assignment`). Default 4 GiB.
        candidates: candidates per row on that sparse path. Default 128.
        progress: a progress bar over the cost rows (rank 0). Default off.

    Raises:
        ValueError: a value outside its range, with the name of the setting.
        TypeError: ``loss`` is not an ``SSIML1Loss``.

    Example::

        settings = AssignmentSettings(method="greedy", momentum=0.5)
        paper = AssignmentSettings(cost="ssim_l1")  # the paper's cost: the training loss
        handler = QuantileAssignmentHandler(loader, settings=settings)
        # in bundle JSON: "settings": {"method": "greedy", "momentum": 0.5}, or with
        # "_target_": "monai_neurosql.assignment.AssignmentSettings"
    """

    method: str = "hungarian"
    momentum: float = 0.7
    cost: str | None = None
    loss: SSIML1Loss | None = None
    max_cost_bytes: int = DEFAULT_MAX_BYTES
    decode_batch_size: int = 256
    block_rows: int = 1024
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES
    candidates: int = 128
    progress: bool = False

    def __post_init__(self) -> None:
        if self.method not in ASSIGNMENT_METHODS:
            raise ValueError(f"method must be one of {ASSIGNMENT_METHODS}, got {self.method!r}.")
        if self.cost is not None and self.cost not in COST_KINDS:
            raise ValueError(f"cost must be one of {COST_KINDS} or None (the caller's default), got {self.cost!r}.")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {self.momentum}.")
        if self.loss is not None and not isinstance(self.loss, SSIML1Loss):
            raise TypeError(f"loss must be an SSIML1Loss or None, got {type(self.loss).__name__}.")
        for name in ("max_cost_bytes", "decode_batch_size", "block_rows", "max_dense_bytes", "candidates"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")

    @classmethod
    def coerce(cls, settings: AssignmentSettings | Mapping[str, Any] | None) -> AssignmentSettings:
        """``settings`` as an :class:`AssignmentSettings`: ``None`` gives the defaults, a dict (bundle JSON) its fields.

        Raises:
            ValueError: a dict with keys that are not settings (named in the message).
            TypeError: anything else.
        """
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, Mapping):
            unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(f"unknown assignment settings {unknown}; the settings are "
                                 f"{[f.name for f in dataclasses.fields(cls)]}.")
            return cls(**settings)
        raise TypeError(f"settings must be an AssignmentSettings, a dict of its fields or None, got "
                        f"{type(settings).__name__}.")

    def with_loss(self, loss: Any) -> AssignmentSettings:
        """These settings with ``loss`` as the cost's loss when none is set and ``loss`` is an ``SSIML1Loss``
        (a trainer's ``loss_function``); otherwise these settings unchanged."""
        if self.loss is not None or not isinstance(loss, SSIML1Loss):
            return self
        return dataclasses.replace(self, loss=loss)

    def with_default_cost(self, cost: str) -> AssignmentSettings:
        """These settings with ``cost`` when they name none (``cost=None``); otherwise unchanged."""
        return self if self.cost is not None else dataclasses.replace(self, cost=cost)

    def cost_matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(m, k)`` costs ``l(x_i, y_k)`` under these settings (:func:`~monai_neurosql.pairwise_cost`; no cost
        named: :data:`ASSIGNMENT_COST`)."""
        return pairwise_cost(x, y, kind=self.cost or ASSIGNMENT_COST, loss=self.loss, max_bytes=self.max_cost_bytes)

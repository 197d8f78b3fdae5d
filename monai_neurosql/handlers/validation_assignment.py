"""Held-out validation loss for NeuroSQL (images without codes), for early stopping and model selection."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.utils import convert_to_tensor

from ..assignment import AssignmentSettings
from ..validation import heldout_assignment_cost, validation_settings

__all__ = ["ValidationAssignmentCost"]


class ValidationAssignmentCost:
    """Every ``every_n_epochs`` epochs, store :func:`~monai_neurosql.validation.heldout_assignment_cost` of the
    validation images in ``engine.state.metrics[metric_name]`` (lower is better).

    Validation images have no latent codes, so their loss is the optimal assignment cost against a fresh
    lattice of their own size (see :func:`heldout_assignment_cost`), under the trainer's loss settings (its
    ``loss_function`` when that is an :class:`~monai_neurosql.SSIML1Loss` and ``settings`` names no loss), so
    the validation cost is the training cost on unseen images. Pair it with MONAI's
    ``EarlyStopHandler(trainer=trainer, patience=..., score_function=lambda e: -e.state.metrics[name],
    epoch_level=True)`` attached to the trainer, and with ``CheckpointSaver(save_key_metric=True,
    key_metric_name=name, key_metric_negative_sign=True)``; attach this handler first.

    Args:
        val_loader: loader over the validation images (dicts with ``image_key``, and ``label_key`` when the
            generator is class-conditional); read once and cached.
        every_n_epochs: how often to evaluate. Default 1.
        metric_name: key in ``engine.state.metrics``. Default ``"val_assignment_cost"``.
        settings: :class:`~monai_neurosql.assignment.AssignmentSettings` or a dict of its fields (solver, cost,
            decode batch size). Settings that name no cost (``None``, ``{"method": "greedy"}``,
            ``AssignmentSettings(method="greedy")``) validate on the SSIM+L1 cost, the training loss
            (:data:`~monai_neurosql.validation.VALIDATION_COST`), even though the training assignment's default
            cost is ``"l2"``: early stopping and the best model are judged in the loss the generator is trained
            on. Settings that name a cost are used as given. Default: exact solver, SSIM+L1.
        seed: seed of the validation lattice and of the subset below.
        max_images: evaluate a fixed random subset of at most this many images (the cost matrix is
            ``max_images^2``); ``None`` uses all.
        image_key, label_key: batch keys.
        name: logger name; default the engine's logger.
    """

    def __init__(
        self,
        val_loader: Iterable,
        every_n_epochs: int = 1,
        metric_name: str = "val_assignment_cost",
        settings: AssignmentSettings | Mapping[str, Any] | None = None,
        seed: int = 12345,
        max_images: int | None = 512,
        image_key: str = "image",
        label_key: str = "label",
        name: str | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.val_loader = val_loader
        self.every_n_epochs = every_n_epochs
        self.metric_name = metric_name
        self.settings = validation_settings(settings)
        self.seed = seed
        self.max_images = max_images
        self.image_key, self.label_key = image_key, label_key
        self.logger = logging.getLogger(name)
        self._name = name
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)

    def _load(self, conditional: bool) -> None:
        images, labels = [], []
        for batch in self.val_loader:
            image = batch[self.image_key]
            images.append(convert_to_tensor(image, track_meta=False, wrap_sequence=True).float())
            if conditional:
                labels.append(torch.as_tensor(batch[self.label_key]).long().reshape(-1))
        if not images:
            raise ValueError("the validation loader is empty.")
        self._images = torch.cat(images)
        self._labels = torch.cat(labels) if conditional else None
        if self.max_images is not None and self._images.shape[0] > self.max_images:
            keep = torch.randperm(self._images.shape[0], generator=torch.Generator().manual_seed(self.seed))
            keep = keep[: self.max_images].sort().values
            self._images = self._images[keep]
            self._labels = None if self._labels is None else self._labels[keep]

    def __call__(self, engine: Engine) -> None:
        conditional = getattr(engine, "conditional", False)
        if self._images is None:
            self._load(conditional)
        generator = getattr(engine, "generator_module", engine.generator)  # without a DDP wrapper
        settings = self.settings.with_loss(getattr(engine, "loss_function", None))
        value = heldout_assignment_cost(generator, self._images, engine.bank.prior, engine.bank.dim,
                                        labels=self._labels, seed=self.seed, settings=settings)
        engine.state.metrics[self.metric_name] = value
        self.logger.info(f"Epoch {engine.state.epoch}: {self.metric_name} = {value:.4f}")

"""Evaluate generative metrics on fresh samples every few epochs (proxy-FID, SSIM, diversity, ...)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from ignite.engine import Engine, Events

from ..generate import generate

__all__ = ["GenerativeMetricsHandler"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]
Sampler = Callable[[Engine, int, int], torch.Tensor]


def _neurosql_sampler(engine: Engine, num: int, seed: int) -> torch.Tensor:
    generator = getattr(engine, "generator_module", engine.generator)  # without a DDP wrapper
    return generate(generator, num, engine.bank.lattice, seed=seed)


class GenerativeMetricsHandler:
    """Every ``every_n_epochs`` epochs, sample ``num_samples`` images with a fixed seed and store each metric
    ``fn(real, fake)`` in ``engine.state.metrics[name]`` (so StatsHandler, TensorBoard, early stopping and
    CheckpointSaver's key metric can use them).

    Args:
        real_images: reference real images ``N x C x [SPATIAL]`` in ``[0, 1]`` (e.g. the validation set).
        metrics: ``{name: fn(real, fake) -> float}``, e.g. ``{"proxy_fid": proxy_fid, "ssim": paired_ssim}``.
        num_samples: generated images per evaluation (the paper matches 2048).
        every_n_epochs: how often. Default 5.
        seed: sampling seed (the same codes every time).
        sampler: ``sampler(engine, num, seed) -> images``; default NeuroSQL's sampled-z
            ``generate(generator, num, engine.bank.lattice, seed)``. Baseline trainers pass their own.
        name: logger name; default the engine's logger.
    """

    def __init__(self, real_images: torch.Tensor, metrics: Mapping[str, MetricFn], num_samples: int = 2048,
                 every_n_epochs: int = 5, seed: int = 0, sampler: Sampler | None = None,
                 name: str | None = None) -> None:
        if not metrics:
            raise ValueError("metrics must name at least one metric function.")
        if every_n_epochs < 1 or num_samples < 2:
            raise ValueError(f"every_n_epochs must be >= 1 and num_samples >= 2, got {every_n_epochs}, {num_samples}.")
        self.real_images = real_images
        self.metrics = dict(metrics)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.sampler = sampler or _neurosql_sampler
        self.logger = logging.getLogger(name)
        self._name = name

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)

    def __call__(self, engine: Engine) -> None:
        fake = self.sampler(engine, self.num_samples, self.seed)
        values = {name: float(fn(self.real_images, fake)) for name, fn in self.metrics.items()}
        engine.state.metrics.update(values)
        self.logger.info(f"Epoch {engine.state.epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

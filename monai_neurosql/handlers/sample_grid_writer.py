"""Write a PNG grid (and a TensorBoard image) of seeded samples every few epochs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..generate import generate
from ..visualize import make_grid, save_grid_png

__all__ = ["SampleGridWriter"]


class SampleGridWriter:
    """Every ``every_n_epochs`` epochs (and at the end), sample ``num_samples`` images with a fixed seed and write
    ``<output_dir>/<prefix>_epoch<NNNN>.png``; with a ``summary_writer`` also log the grid to TensorBoard.

    A fixed seed shows the same codes every time, so successive grids show the generator learning. For class-
    conditional generators each grid row is one class.

    Args:
        output_dir: folder of the PNG files.
        num_samples: images per grid. Default 16.
        every_n_epochs: how often. Default 5.
        seed: sampling seed.
        prefix: file name prefix.
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (or ``None``).
        scale: PNG upscaling factor (small images are hard to see).
        name: logger name; default the engine's logger.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_samples: int = 16,
        every_n_epochs: int = 5,
        seed: int = 0,
        prefix: str = "samples",
        summary_writer: Any | None = None,
        scale: int = 2,
        name: str | None = None,
    ) -> None:
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError(f"every_n_epochs and num_samples must be >= 1, got {every_n_epochs}, {num_samples}.")
        self.output_dir = Path(output_dir)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.prefix = prefix
        self.summary_writer = summary_writer
        self.scale = scale
        self.logger = logging.getLogger(name)
        self._name = name
        self.last_path: Path | None = None

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs) | Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        path = self.output_dir / f"{self.prefix}_epoch{epoch:04d}.png"
        if self.last_path == path:  # EPOCH_COMPLETED and COMPLETED of the same epoch
            return
        generator = getattr(engine, "generator_module", engine.generator)  # without a DDP wrapper
        num_classes = getattr(generator, "num_classes", None)
        labels, nrow = None, None
        if num_classes:
            nrow = max(1, self.num_samples // num_classes)
            labels = torch.arange(num_classes).repeat_interleave(nrow)[: self.num_samples]
            labels = torch.cat([labels, torch.zeros(self.num_samples - len(labels), dtype=torch.long)])
        images = generate(generator, self.num_samples, engine.bank.lattice, seed=self.seed, labels=labels)
        self.last_path = save_grid_png(images, path, nrow=nrow, scale=self.scale)
        if self.summary_writer is not None:
            self.summary_writer.add_image(self.prefix, make_grid(images, nrow=nrow), epoch, dataformats="HW"
                                          if images.shape[1] != 3 else "HWC")
        self.logger.info(f"Epoch {epoch}: sample grid written to {path}")

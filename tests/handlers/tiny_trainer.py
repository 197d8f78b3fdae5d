"""A tiny NeuroSQL trainer for the handler tests (16x16 shapes, a few hundred parameters, CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ignite.engine import Engine
from monai.data import Dataset

from monai_neurosql import LatentBank, SSIML1Loss
from monai_neurosql.data import train_loader
from monai_neurosql.engines import NeuroSQLTrainer
from monai_neurosql.networks import ConvGenerator
from tests.helpers import indexed_dataset, shapes

# not MONAI's default window (11): a handler that ignores the trainer's loss gives other costs
TRAIN_LOSS = {"win_size": 7}


@dataclass
class Tiny:
    images: torch.Tensor
    labels: torch.Tensor
    net: ConvGenerator
    bank: LatentBank
    conditional: bool

    def engine(self) -> Engine:
        """A bare ignite engine that carries the generator and bank (enough for the sampling handlers)."""
        engine = Engine(lambda e, b: None)
        engine.generator, engine.bank = self.net, self.bank
        return engine

    def dataset(self) -> Dataset:
        return indexed_dataset(self.images, self.labels if self.conditional else None)

    def trainer(self, epochs: int, handlers=(), batch_size: int = 8, dataset: Dataset | None = None) -> NeuroSQLTrainer:
        ds = self.dataset() if dataset is None else dataset
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2)
        return NeuroSQLTrainer("cpu", epochs, train_loader(ds, batch_size, seed=0), self.net, self.bank, optimizer,
                               loss_function=SSIML1Loss(2, **TRAIN_LOSS), train_handlers=list(handlers), seed=0)


def make_tiny(n: int = 24, conditional: bool = False, seed: int = 0) -> Tiny:
    images, labels = shapes(n, size=16, seed=seed)
    torch.manual_seed(seed)
    net = ConvGenerator(2, 3, spatial_size=16, channels=(16, 8), num_classes=2 if conditional else None)
    bank = LatentBank.class_conditional(labels, 3, seed=seed) if conditional else LatentBank.create(n, 3, seed=seed)
    return Tiny(images, labels, net, bank, conditional)

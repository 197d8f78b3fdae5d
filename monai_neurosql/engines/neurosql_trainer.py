"""The NeuroSQL trainer: regression of G(Z_hat[index]) onto the images (Algorithm 1 line 4, Algorithm 2 line 7)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.data.utils import set_rnd
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, convert_to_tensor
from torch.optim.optimizer import Optimizer

from ..generate import training_layout
from ..latent_bank import LatentBank
from ..losses import SSIML1Loss
from .events import AssignmentEvents
from .utils import check_finite_loss, optimizer_step

__all__ = ["NeuroSQLTrainer", "prepare_neurosql_batch"]


def prepare_neurosql_batch(
    batchdata: Mapping[str, Any],
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    image_key: str = CommonKeys.IMAGE,
    index_key: str = "index",
    label_key: str = CommonKeys.LABEL,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(images, index, labels or None)`` from a batch dict; images on ``device`` as float."""
    if not isinstance(batchdata, Mapping):
        raise TypeError(f"NeuroSQL batches must be dicts with {image_key!r} and {index_key!r}, got "
                        f"{type(batchdata).__name__}.")
    missing = [k for k in (image_key, index_key) if k not in batchdata]
    if missing:
        raise KeyError(
            f"batch is missing {missing}: every dataset the trainer sees must give each image its dataset index "
            f"under {index_key!r} (see monai_neurosql.data), keys present: {sorted(batchdata)}."
        )
    images = batchdata[image_key]
    images = convert_to_tensor(images, track_meta=False, wrap_sequence=True)
    images = images.to(device=device, non_blocking=non_blocking, **kwargs).float()
    index = torch.as_tensor(batchdata[index_key]).long().reshape(-1)
    labels = batchdata.get(label_key)
    if labels is not None:
        labels = torch.as_tensor(labels).long().reshape(-1).to(device=device, non_blocking=non_blocking)
    return images, index, labels


class NeuroSQLTrainer(Trainer):
    """Trains a NeuroSQL generator on images whose latent codes live in a :class:`LatentBank`.

    One iteration looks up the codes of the batch, ``z = bank.codes[batch["index"]]``, runs the generator
    (with the batch labels when it is class-conditional), applies the loss (``SSIML1Loss`` by default),
    and takes an optimizer step with optional gradient clipping and AMP (CUDA). The codes change only through
    :class:`~monai_neurosql.handlers.QuantileAssignmentHandler`, which this trainer gives its events
    (:class:`AssignmentEvents`).

    New arguments (the others are :class:`monai.engines.Trainer`'s):
        generator: the generator network ``G(z[, labels])``.
        bank: the :class:`LatentBank` with one row per training image (moved to ``device``).
        optimizer: e.g. AdamW over ``generator.parameters()``.
        loss_function: ``loss(pred, images)``; default ``SSIML1Loss(generator.spatial_dims)``.
        grad_clip_norm: max gradient norm (``None``: no clipping). Default 1.0 (paper appendix J).
        amp: mixed precision with ``torch.autocast`` and a gradient scaler; only on CUDA devices.
        channels_last: on the CPU, store the generator's weights channels-last before training
            (:func:`~monai_neurosql.generate.training_layout`: the same training to float rounding, iterations
            about 1.25x faster; not for a ``DistributedDataParallel`` generator, whose buckets are laid out
            already, nor the FiLM U-Net, slower so). Default ``True``.
        seed: when set, every epoch starts by seeding torch, numpy, ``random`` and the data loader's
            MONAI transforms with ``seed + epoch``, so a run resumed from an epoch checkpoint continues
            exactly like an uninterrupted one. Use a sampler that shuffles by epoch (e.g.
            ``DistributedSampler(..., shuffle=True, seed=seed)``, as :func:`monai_neurosql.data.train_loader`
            builds), since MONAI sets its epoch at every epoch start.
        image_key, index_key, label_key: batch keys.

    The iteration output is a dict with ``"image"``, ``"pred"``, ``"loss"`` (a float), ``"index"`` and
    ``"label"``, readable with :func:`monai.handlers.from_engine`.

    Raises:
        FloatingPointError: the loss became NaN or infinite; raised before the optimizer step, so the weights
            and the last checkpoint stay finite.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        bank: LatentBank,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_neurosql_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        grad_clip_norm: float | None = 1.0,
        seed: int | None = None,
        channels_last: bool = True,
        image_key: str = CommonKeys.IMAGE,
        index_key: str = "index",
        label_key: str = CommonKeys.LABEL,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        device = torch.device(device)
        if amp and device.type != "cuda":
            amp = False  # autocast with a gradient scaler is a CUDA feature; float32 elsewhere
        events = [AssignmentEvents] + list(event_names or [])
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=None,
            amp=False,  # MONAI's Trainer would build the deprecated torch.cuda.amp.GradScaler; we keep our own
            event_names=events,
            event_to_attr=event_to_attr,
            decollate=False,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.use_amp = amp
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp else None
        self.generator = generator.to(device)
        if self.generator is self.generator_module:
            training_layout(self.generator, channels_last)
        self.bank = bank.to(device)
        self.optimizer = optimizer
        spatial_dims = getattr(self.generator_module, "spatial_dims", 2)
        self.loss_function = SSIML1Loss(spatial_dims) if loss_function is None else loss_function
        self.grad_clip_norm = grad_clip_norm
        self.seed = seed
        self.image_key, self.index_key, self.label_key = image_key, index_key, label_key
        self.conditional = getattr(self.generator_module, "num_classes", None) is not None
        # under DDP the ranks' batch-norm running statistics drift apart between broadcasts; make them identical
        # before any epoch-end work (assignment, validation, sampling) so that every rank sees the same model
        self.add_event_handler(Events.EPOCH_COMPLETED, self._sync_buffers)
        if seed is not None:
            self.add_event_handler(Events.EPOCH_STARTED, self._seed_epoch)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    @property
    def generator_module(self) -> torch.nn.Module:
        """The generator without its ``DistributedDataParallel`` wrapper (for decoding, sampling, attributes)."""
        return getattr(self.generator, "module", self.generator)

    def _sync_buffers(self, engine: NeuroSQLTrainer) -> None:
        if dist.is_available() and dist.is_initialized():
            for buffer in self.generator_module.buffers():
                dist.broadcast(buffer.data, src=0)

    def _seed_epoch(self, engine: NeuroSQLTrainer) -> None:
        epoch_seed = int(self.seed) + int(engine.state.epoch)
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        random.seed(epoch_seed)
        dataset = getattr(self.data_loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, epoch_seed % 2**32)

    def _iteration(self, engine: NeuroSQLTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, index, labels = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, image_key=engine.image_key,
            index_key=engine.index_key, label_key=engine.label_key, **engine.to_kwargs,
        )
        if index.numel() and (index.min() < 0 or index.max() >= engine.bank.n):
            raise IndexError(
                f"batch index out of range [0, {engine.bank.n - 1}]: the latent bank must have one row per training "
                "image and the dataset must number its images 0..n-1."
            )
        z = engine.bank.codes[index.to(engine.bank.codes.device)].to(engine.state.device)
        cond = labels if engine.conditional else None
        engine.state.output = {
            CommonKeys.IMAGE: images, CommonKeys.LABEL: labels, engine.index_key: index,
        }
        engine.generator.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp, **engine.amp_kwargs):
            pred = engine.generator(z, cond)
            engine.state.output[CommonKeys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.loss_function(pred.float(), images).mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        check_finite_loss(loss, engine)
        optimizer_step(engine, loss, engine.optimizer, engine.generator.parameters(), engine.grad_clip_norm,
                       engine.grad_scaler)
        engine.state.output[CommonKeys.PRED] = pred.detach()
        engine.state.output[CommonKeys.LOSS] = loss.item()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

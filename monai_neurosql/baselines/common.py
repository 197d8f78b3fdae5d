"""What the baseline trainers share: batch preparation and the trainer skeleton (same budget rules as NeuroSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from monai.engines import Trainer
from monai.utils import CommonKeys, convert_to_tensor

from ..generate import training_layout

__all__ = ["BaselineTrainer", "prepare_images"]


def prepare_images(batchdata: Mapping[str, Any], device: torch.device, image_key: str = CommonKeys.IMAGE,
                   label_key: str = CommonKeys.LABEL, non_blocking: bool = False):
    """``(images, labels or None)`` on ``device`` from a batch dict (baselines need no dataset index)."""
    if not isinstance(batchdata, Mapping) or image_key not in batchdata:
        raise KeyError(f"baseline trainers read batch dicts with {image_key!r}.")
    images = batchdata[image_key]
    images = convert_to_tensor(images, track_meta=False, wrap_sequence=True)
    labels = batchdata.get(label_key)
    if labels is not None:
        labels = torch.as_tensor(labels).long().reshape(-1).to(device, non_blocking=non_blocking)
    return images.to(device, non_blocking=non_blocking).float(), labels


class BaselineTrainer(Trainer):
    """A MONAI ``Trainer`` for the baselines: holds the models, the AMP scaler, clipping and the conditioning flag.

    Subclasses implement ``_iteration`` and ``sample(num, seed, labels)``. ``amp`` is honoured on CUDA only, with
    ``torch.amp.GradScaler`` (MONAI's base class would build the deprecated CUDA-specific one). ``channels_last``
    (default ``True``): on the CPU the subclasses store their networks' weights channels-last before training
    (:func:`~monai_neurosql.generate.training_layout`), as the NeuroSQL trainer does, so that every model trains
    under the same layout.
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader: Iterable,
                 conditional: bool = False, amp: bool = False, grad_clip_norm: float | None = 1.0,
                 train_handlers: list | None = None, epoch_length: int | None = None, channels_last: bool = True,
                 **kwargs) -> None:
        device = torch.device(device)
        super().__init__(device=device, max_epochs=max_epochs, data_loader=train_data_loader,
                         epoch_length=epoch_length, amp=False, decollate=False, **kwargs)
        self.use_amp = bool(amp) and device.type == "cuda"
        self.grad_clip_norm = grad_clip_norm
        self.conditional = conditional
        self.channels_last = channels_last
        self._pending_handlers = train_handlers or []

    def _lay_out(self, *modules: torch.nn.Module, spatial_dims: int | None = None) -> None:
        """Store the weights of ``modules`` (on the trainer's device) channels-last, when ``channels_last`` allows."""
        for module in modules:
            training_layout(module, self.channels_last, spatial_dims)

    def _attach_handlers(self) -> None:
        """Call at the end of the subclass constructor, once its models exist."""
        if self._pending_handlers:
            self._register_handlers(self._pending_handlers)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler("cuda") if self.use_amp else None

    def sample(self, num: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

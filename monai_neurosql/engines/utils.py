"""Pieces shared by the NeuroSQL trainer and the baseline trainers (same budget rules for every model)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.engines.utils import IterationEvents

__all__ = ["check_finite_loss", "optimizer_step"]


def check_finite_loss(loss: torch.Tensor, engine, name: str = "loss") -> None:
    """Raise ``FloatingPointError`` (before any optimizer step) when ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{type(engine).__name__} {name} became {loss.item()} at epoch {engine.state.epoch}, iteration "
            f"{engine.state.iteration}; training stopped before the optimizer step, so the weights and the last "
            "checkpoint are finite. Lower the learning rate, keep grad_clip_norm set, or check the images for NaNs."
        )


def optimizer_step(
    engine,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    grad_clip_norm: float | None,
    scaler: torch.amp.GradScaler | None = None,
    fire_events: bool = True,
) -> None:
    """Backward, optional gradient-norm clipping (after unscaling under AMP), optimizer step."""
    parameters = list(parameters)
    if scaler is not None:
        scaler.scale(loss).backward()
        if fire_events:
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        scaler.unscale_(optimizer)
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if fire_events:
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
        optimizer.step()

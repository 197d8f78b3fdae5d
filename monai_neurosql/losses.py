"""The NeuroSQL loss ``l = w * (1 - SSIM) + (1 - w) * L1`` (paper appendix L).

The SSIM part is :class:`~monai_neurosql.ssim.SSIMWindow`; the all-pairs version of this loss, the assignment
cost, is :func:`~monai_neurosql.cost.pairwise_cost`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.loss import _Loss

from .ssim import SSIMWindow

__all__ = ["SSIML1Loss"]


class SSIML1Loss(_Loss):
    """NeuroSQL's training loss ``l = w * (1 - SSIM(x, y)) + (1 - w) * mean|x - y|`` (appendix L, ``w = 0.5``).

    SSIM is MONAI's :class:`~monai.metrics.SSIMMetric` (same window and constants), computed with separable
    filtering so that 3D volumes stay cheap. The loss is computed in float32 also under autocast.

    The loss object is the one way to name these settings: :func:`~monai_neurosql.pairwise_cost` and the
    assignment take it (``loss=``) to build the same cost for every pair.

    Args:
        spatial_dims: 2 or 3.
        ssim_weight: ``w`` above. Default 0.5.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses, shape ``(B,)``).
        window: the SSIM window settings of :class:`~monai_neurosql.ssim.SSIMWindow`, by keyword: ``win_size``
            (default 11), ``kernel_sigma`` (1.5), ``kernel_type`` (``"gaussian"`` or ``"uniform"``),
            ``data_range`` (1.0, images in ``[0, 1]``), ``k1`` (0.01), ``k2`` (0.03).

    Raises:
        ValueError: ``reduction``, ``ssim_weight`` or a window setting out of range.
        TypeError: an unknown keyword.

    Example::

        loss = SSIML1Loss(spatial_dims=2)
        value = loss(generator(z), images)   # images: Bx1xHxW in [0, 1]
        loss = SSIML1Loss(2, win_size=7, reduction="none")   # bundle JSON: {"_target_": ..., "win_size": 7}
    """

    def __init__(
        self,
        spatial_dims: int,
        *,
        ssim_weight: float = 0.5,
        reduction: str = "mean",
        **window: Any,
    ) -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)
        if not 0.0 <= ssim_weight <= 1.0:
            raise ValueError(f"ssim_weight must lie in [0, 1], got {ssim_weight}.")
        self.window = SSIMWindow(spatial_dims, **window)
        self.spatial_dims = spatial_dims
        self.ssim_weight = float(ssim_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``input``, ``target``: ``BxCx[SPATIAL]``. Returns the reduced loss (or ``(B,)``)."""
        if input.shape != target.shape:
            raise ValueError(f"input and target must have the same shape, got {tuple(input.shape)} "
                             f"and {tuple(target.shape)}.")
        self.window.check_shape(input, "input")
        x, y = input.float(), target.float()
        loss = torch.zeros(x.shape[0], device=x.device)
        if self.ssim_weight > 0:
            loss = loss + self.ssim_weight * (1.0 - self.window.ssim(x, y))
        if self.ssim_weight < 1:
            loss = loss + (1.0 - self.ssim_weight) * (x - y).abs().flatten(1).mean(1)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

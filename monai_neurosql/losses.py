"""The NeuroSQL loss ``l = w * (1 - SSIM) + (1 - w) * L1`` (paper appendix L).

The SSIM part is :class:`~monai_neurosql.ssim.SSIMWindow`; the all-pairs version of this loss, the assignment
cost, is :func:`~monai_neurosql.cost.pairwise_cost`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.modules.loss import _Loss

from .ssim import SSIMWindow

__all__ = ["SSIML1Loss"]


class SSIML1Loss(_Loss):
    """NeuroSQL's training loss ``l = w * (1 - SSIM(x, y)) + (1 - w) * mean|x - y|`` (appendix L, ``w = 0.5``).

    SSIM is MONAI's :class:`~monai.metrics.SSIMMetric` (same window and constants), computed with separable
    filtering so that 3D volumes stay cheap. The loss is computed in float32 also under autocast.

    Args:
        spatial_dims: 2 or 3.
        win_size: SSIM window size. Default 11.
        kernel_sigma: Gaussian window standard deviation. Default 1.5.
        kernel_type: ``"gaussian"`` or ``"uniform"``.
        data_range: dynamic range of the images. Default 1.0 (images in ``[0, 1]``).
        k1: luminance stability constant. Default 0.01.
        k2: contrast stability constant. Default 0.03.
        ssim_weight: ``w`` above. Default 0.5.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses, shape ``(B,)``).

    Example::

        loss = SSIML1Loss(spatial_dims=2)
        value = loss(generator(z), images)   # images: Bx1xHxW in [0, 1]
    """

    def __init__(
        self,
        spatial_dims: int,
        win_size: int | Sequence[int] = 11,
        kernel_sigma: float | Sequence[float] = 1.5,
        kernel_type: str = "gaussian",
        data_range: float = 1.0,
        k1: float = 0.01,
        k2: float = 0.03,
        ssim_weight: float = 0.5,
        reduction: str = "mean",
    ) -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)
        if not 0.0 <= ssim_weight <= 1.0:
            raise ValueError(f"ssim_weight must lie in [0, 1], got {ssim_weight}.")
        self.window = SSIMWindow(spatial_dims, win_size, kernel_sigma, kernel_type, data_range, k1, k2)
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

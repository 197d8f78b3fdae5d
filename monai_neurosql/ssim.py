"""The one SSIM implementation of the package: the window, its constants and float64 moments.

SSIM follows MONAI's :class:`monai.metrics.SSIMMetric` exactly: the same window, constants and valid (unpadded)
filtering, averaged over channels and window positions. :class:`SSIMWindow` serves both the training loss
(:class:`~monai_neurosql.losses.SSIML1Loss`, paired images) and the all-pairs assignment cost
(:func:`~monai_neurosql.cost.pairwise_cost`), so the two agree pair by pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep

__all__ = ["SSIMWindow"]


class SSIMWindow:
    """The SSIM window and constants, with the three pieces every SSIM computation is built from.

    - :meth:`filter`: the window-weighted local mean of every window position (valid, separable filtering);
    - :meth:`moments`: per-image local mean and variance, computed once per image;
    - :meth:`ssim_map`: the SSIM formula from means, variances and the cross moment ``E[xy]``.

    The window is MONAI's: a normalized Gaussian ``exp(-t^2 / (2 sigma^2))`` on ``t = -(w-1)/2 .. (w-1)/2``
    per axis (or a uniform box), and ``c1 = (k1 * data_range)^2``, ``c2 = (k2 * data_range)^2``.

    Args:
        spatial_dims: 2 or 3.
        win_size: window size per axis (int or sequence).
        kernel_sigma: Gaussian standard deviation per axis.
        kernel_type: ``"gaussian"`` or ``"uniform"``.
        data_range: dynamic range of the images (1.0 for images in ``[0, 1]``).
        k1: luminance stability constant.
        k2: contrast stability constant.
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
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if kernel_type not in ("gaussian", "uniform"):
            raise ValueError(f"kernel_type must be 'gaussian' or 'uniform', got {kernel_type!r}.")
        self.spatial_dims = spatial_dims
        self.win_size = tuple(int(w) for w in ensure_tuple_rep(win_size, spatial_dims))
        self.kernel_sigma = tuple(float(s) for s in ensure_tuple_rep(kernel_sigma, spatial_dims))
        if any(w < 1 for w in self.win_size):
            raise ValueError(f"win_size must be positive, got {self.win_size}.")
        self.kernel_type = kernel_type
        self.data_range = float(data_range)
        self.k1, self.k2 = float(k1), float(k2)
        self.c1 = (k1 * self.data_range) ** 2
        self.c2 = (k2 * self.data_range) ** 2
        self._kernels_1d = [self._kernel_1d(w, s) for w, s in zip(self.win_size, self.kernel_sigma)]

    def _kernel_1d(self, size: int, sigma: float) -> torch.Tensor:
        # float64 so that the window sums to 1 exactly: a float32 window sums to 1 +- 1e-7, which on a flat window
        # of brightness 0.9 fakes a variance of ~1e-7 and moves SSIM by up to ~4e-5 (c2 is only 9e-4)
        if self.kernel_type == "uniform":
            return torch.full((size,), 1.0 / size, dtype=torch.float64)
        dist = torch.arange(start=(1 - size) / 2, end=(1 + size) / 2, step=1, dtype=torch.float64)  # MONAI's grid
        gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
        return gauss / gauss.sum()

    @property
    def kernel(self) -> torch.Tensor:
        """The full window (outer product of the 1D kernels), shape ``win_size``."""
        kernel = self._kernels_1d[0]
        for k in self._kernels_1d[1:]:
            kernel = kernel[..., None] * k
        return kernel

    def output_size(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Number of window positions per axis for images of ``spatial_shape``."""
        return tuple(s - w + 1 for s, w in zip(spatial_shape, self.win_size))

    def check_shape(self, image: torch.Tensor, name: str = "image") -> None:
        """Raise ``ValueError`` unless ``image`` is ``BxCx[SPATIAL]`` and at least one window large."""
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{name} must have shape BxCx[SPATIAL] with {self.spatial_dims} spatial dims, "
                f"got shape {tuple(image.shape)}."
            )
        spatial = tuple(image.shape[2:])
        if any(s < w for s, w in zip(spatial, self.win_size)):
            raise ValueError(
                f"{name} spatial size {spatial} is smaller than the SSIM window {self.win_size}; "
                "use a smaller win_size or larger images."
            )

    def _band(self, axis: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """``(size, size - w + 1)`` banded matrix ``T[j + t, j] = kernel[t]`` of the 1D window of ``axis``."""
        k1d = self._kernels_1d[axis]
        out_size = size - k1d.numel() + 1
        band = torch.zeros(size, out_size, dtype=torch.float64)
        for t, value in enumerate(k1d.tolist()):
            band[torch.arange(out_size) + t, torch.arange(out_size)] = value
        return band.to(device=like.device, dtype=like.dtype)

    def filter(self, image: torch.Tensor) -> torch.Tensor:
        """Window-weighted local means at every valid position: ``BxCx[SPATIAL] -> BxCx[SPATIAL - win + 1]``.

        Separable filtering, one axis at a time, as a GEMM with a banded matrix: dense GEMMs run an order of
        magnitude faster than PyTorch's depthwise convolutions on CPU and are as fast on GPU.
        """
        out = image
        for axis in range(self.spatial_dims):
            dim = 2 + axis
            band = self._band(axis, out.shape[dim], out)
            out = torch.matmul(out.movedim(dim, -1), band).movedim(-1, dim)
        return out

    def moments(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local mean and variance ``(mu, E[x^2] - mu^2)`` of every window, each ``BxCx[SPATIAL']``, in float64.

        ``E[x^2] - mu^2`` cancels catastrophically in float32 on flat bright windows (mean 0.9, variance 5e-5 gives
        errors around 4e-5 in SSIM, as MONAI's float32 ``SSIMMetric`` shows); float64 moments keep SSIM within
        about 1e-7 of the exact value. Filtering is cheap next to the networks, so the cost is negligible.
        """
        x = image.double()
        mu = self.filter(x)
        return mu, self.filter(x * x) - mu * mu

    def ssim_map(
        self,
        mu_x: torch.Tensor,
        mu_y: torch.Tensor,
        var_x: torch.Tensor,
        var_y: torch.Tensor,
        cov: torch.Tensor,
        overwrite: bool = False,
    ) -> torch.Tensor:
        """The SSIM formula per window (Wang et al. 2004), from broadcastable moments.

        ``((2 mu_x mu_y + c1) (2 cov + c2)) / ((mu_x^2 + mu_y^2 + c1) (var_x + var_y + c2))``. Used with paired
        moments by the loss and with broadcast ``(L, m, 1) x (L, 1, k)`` moments by the pairwise cost.

        Args:
            overwrite: compute in ``cov``'s memory with the small per-image terms folded first (no autograd),
                the memory-bound inner loop of :func:`pairwise_cost`; the same formula, rearranged as
                ``(cov + c2/2) (2 mu_x mu_y + c1) / ((mu_x^2 + mu_y^2 + c1) / 2 * (var_x + var_y + c2))``.
        """
        if not overwrite:
            numerator = (2 * mu_x * mu_y + self.c1) * (2 * cov + self.c2)
            denominator = (mu_x * mu_x + mu_y * mu_y + self.c1) * (var_x + var_y + self.c2)
            return numerator / denominator
        cs = cov.add_(0.5 * self.c2)
        lum = torch.addcmul(torch.tensor(self.c1, dtype=cov.dtype, device=cov.device), 2.0 * mu_x, mu_y)
        cs.mul_(lum)
        torch.add(0.5 * (mu_x * mu_x + self.c1), 0.5 * mu_y * mu_y, out=lum)
        return cs.div_(lum.mul_(var_x + self.c2 + var_y))

    def ssim(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample SSIM of paired images ``x[b]`` vs ``y[b]``: ``BxCx[SPATIAL] -> (B,)``, float64 moments."""
        mu_x, var_x = self.moments(x)
        mu_y, var_y = self.moments(y)
        cov = self.filter(x.double() * y.double()) - mu_x * mu_y
        ssim_map = self.ssim_map(mu_x, mu_y, var_x, var_y, cov)
        return ssim_map.flatten(1).mean(1).to(x.dtype)

    # ------------------------------------------------------------------ all-pairs windows
    def windows(self, image: torch.Tensor, mean: torch.Tensor, weighted: bool = False) -> torch.Tensor:
        """Every window of every channel, centered on its local mean and flattened: ``BxCx[SPATIAL] -> (B, L, P)``.

        ``L = C * positions`` window positions, ``P = prod(win_size)`` pixels per window; ``mean`` is the window
        mean ``BxCx[SPATIAL']`` (:meth:`moments`); ``weighted`` also multiplies by the kernel.
        ``bmm(windows(x, mx).transpose(0, 1), windows(y, my, weighted=True).permute(1, 2, 0))`` is then the local
        covariance at every position for every pair, free of the ``E[xy] - mu_x mu_y`` cancellation; both operands
        are strided views that GEMM reads in place. The copy keeps the images' own memory order, which is 2-3x
        faster than gathering into GEMM order.
        """
        sd = self.spatial_dims
        view = image
        for axis, w in enumerate(self.win_size):
            view = view.unfold(2 + axis, w, 1)  # (B, C, *positions, *win_size), a view
        centre = mean.to(image.dtype).reshape(*mean.shape, *([1] * sd))
        out = torch.empty(view.shape, dtype=image.dtype, device=image.device)
        torch.sub(view, centre, out=out)
        if weighted:
            out.mul_(self.kernel.to(device=image.device, dtype=image.dtype))
        return out.reshape(image.shape[0], -1, math.prod(self.win_size))

"""The NeuroSQL loss ``l = w * (1 - SSIM) + (1 - w) * L1`` and its all-pairs cost matrix (paper appendix L).

One SSIM implementation serves both the training loss (:class:`SSIML1Loss`, paired images) and the assignment
cost (:func:`pairwise_cost`, all pairs), so ``pairwise_cost(x, y)[i, k]`` equals the loss of ``(x[i], y[k])``.
SSIM follows MONAI's :class:`monai.metrics.SSIMMetric` exactly: the same window, constants and valid
(unpadded) filtering, averaged over channels and window positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from torch.nn.modules.loss import _Loss

__all__ = ["SSIML1Loss", "SSIMWindow", "pairwise_cost", "COST_KINDS"]

#: Cost kinds accepted by :func:`pairwise_cost`.
COST_KINDS = ("ssim_l1", "l1", "l2")

# Default bound on the scratch memory of one pairwise_cost call (bytes).
DEFAULT_MAX_BYTES = 2**30
# Target size of one block of the fused SSIM formula, small enough to stay in a core's cache (bytes).
_FORMULA_BLOCK_BYTES = 2 * 2**20


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
    def _window_view(self, image: torch.Tensor) -> torch.Tensor:
        """``BxCx[SPATIAL]`` -> a view ``(B, C, *positions, *win_size)`` of every window."""
        view = image
        for axis, w in enumerate(self.win_size):
            view = view.unfold(2 + axis, w, 1)
        return view

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

    def cost_kwargs(self) -> dict:
        """The :func:`pairwise_cost` arguments that reproduce this loss for every pair (``kind="ssim_l1"``)."""
        w = self.window
        return {"win_size": w.win_size, "kernel_sigma": w.kernel_sigma, "kernel_type": w.kernel_type,
                "data_range": w.data_range, "k1": w.k1, "k2": w.k2, "ssim_weight": self.ssim_weight}

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


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).float()


def _pairwise_l1(x: torch.Tensor, y: torch.Tensor, max_bytes: int) -> torch.Tensor:
    xf, yf = _flat(x), _flat(y)
    num_features = xf.shape[1]
    out = torch.empty(xf.shape[0], yf.shape[0], device=x.device)
    # cdist(p=1) keeps no (m, k, p) intermediate; chunk rows anyway so the output stays the only big tensor
    rows = max(1, min(xf.shape[0], max_bytes // max(1, 4 * num_features * 4)))
    for i in range(0, xf.shape[0], rows):
        out[i : i + rows] = torch.cdist(xf[i : i + rows], yf, p=1) / num_features
    return out


def _pairwise_l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xf, yf = _flat(x), _flat(y)
    sq = (xf * xf).sum(1)[:, None] + (yf * yf).sum(1)[None, :] - 2.0 * (xf @ yf.t())
    return sq.clamp_min_(0.0) / xf.shape[1]


def _pairwise_ssim(x: torch.Tensor, y: torch.Tensor, window: SSIMWindow, max_bytes: int) -> torch.Tensor:
    """All-pairs SSIM ``(m, k)``: per-image moments once (float64), the covariance by batched float32 GEMM.

    For every window position the covariances of all pairs of a chunk are one GEMM ``(mc, P) @ (P, kc)`` of
    centered, kernel-weighted window vectors; the SSIM formula is then applied in cache-sized blocks of window
    positions and accumulated into the chunk's ``(mc, kc)`` mean.
    """
    x, y = x.float(), y.float()
    mean_x, var_x = window.moments(x)
    mean_y, var_y = window.moments(y)
    # (L, m) / (L, k) float32 for the formula
    mu_x, vx_all = (t.reshape(x.shape[0], -1).t().float().contiguous() for t in (mean_x, var_x))
    mu_y, vy_all = (t.reshape(y.shape[0], -1).t().float().contiguous() for t in (mean_y, var_y))
    num_windows = mu_x.shape[0]
    bytes_per_image = 4 * num_windows * math.prod(window.win_size)  # gathered windows of one image
    m, k = x.shape[0], y.shape[0]
    # columns are gathered once, rows once per column chunk: give the columns the larger share
    col_chunk = int(max(1, min(k, (0.6 * max_bytes) // bytes_per_image)))
    row_chunk = int(max(1, min(m, 256, (0.3 * max_bytes) // bytes_per_image)))
    out = torch.empty(m, k, device=x.device)
    cols = rows = None
    for k0 in range(0, k, col_chunk):
        cols = None  # release the previous chunk before gathering the next: the memory bound counts one of each
        cols = window.windows(y[k0 : k0 + col_chunk], mean_y[k0 : k0 + col_chunk], weighted=True).permute(1, 2, 0)
        kc = cols.shape[-1]
        my, vy = mu_y[:, None, k0 : k0 + kc], vy_all[:, None, k0 : k0 + kc]
        for i0 in range(0, m, row_chunk):
            rows = None
            rows = window.windows(x[i0 : i0 + row_chunk], mean_x[i0 : i0 + row_chunk]).transpose(0, 1)  # (L, mc, P)
            mc = rows.shape[1]
            mx, vx = mu_x[:, i0 : i0 + mc, None], vx_all[:, i0 : i0 + mc, None]
            block = int(max(1, min(num_windows, _FORMULA_BLOCK_BYTES // (4 * mc * kc))))
            acc = torch.zeros(mc, kc, device=x.device)
            for w0 in range(0, num_windows, block):
                w = slice(w0, w0 + block)
                cov = torch.bmm(rows[w], cols[w])
                acc += window.ssim_map(mx[w], my[w], vx[w], vy[w], cov, overwrite=True).sum(0)
            out[i0 : i0 + mc, k0 : k0 + kc] = acc / num_windows
    return out


def pairwise_cost(
    x: torch.Tensor,
    y: torch.Tensor,
    kind: str = "ssim_l1",
    spatial_dims: int | None = None,
    win_size: int | Sequence[int] = 11,
    kernel_sigma: float | Sequence[float] = 1.5,
    kernel_type: str = "gaussian",
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
    ssim_weight: float = 0.5,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """The assignment cost matrix ``C[i, k] = l(x_i, y_k)`` for every pair (paper section 2.4, ``C_{i,k}``).

    ``kind="ssim_l1"`` is NeuroSQL's cost ``w * (1 - SSIM) + (1 - w) * mean|x_i - y_k|`` and equals
    ``SSIML1Loss(reduction="none")(x[i:i+1], y[k:k+1])``; ``"l1"`` is the mean absolute difference and
    ``"l2"`` the mean squared difference (the paper's cheap ablation, one GEMM).

    Cost: the per-image SSIM moments are computed once per image (float64); only the covariance of ``x_i`` and ``y_k``
    needs per-pair work, done as batched GEMMs over centered windows (``L * P`` multiply-adds per pair, ``L`` window
    positions times ``P = prod(win_size)``), 20-59x faster than MONAI's ``SSIMMetric`` run row by row on CPU
    (``docs/benchmarks.md``). The covariance comes from centered windows and the moments are float64, so the
    values are within about 1e-6 of an exact float64 evaluation; MONAI's float32 ``SSIMMetric`` differs from that
    by up to 4e-5 on flat bright windows (its float32 window sum and ``E[x^2] - mu^2``), so the two agree to
    1e-5 on typical images and to ~5e-5 on such windows.

    Memory bound: besides the inputs, their per-image moments (``24 * L`` bytes per image: mean and variance in
    float64 and float32, ``L`` = channels x window positions) and the ``(m, k)`` output, scratch memory stays below about ``max_bytes`` whatever ``m``
    and ``k`` are: at most ``0.9 * max_bytes`` of unfolded windows for a row and a column chunk (both at least
    one image: one image's windows take ``4 * L * P`` bytes, 1.4 MB at 64x64 and 6.7 MB at 128x128), plus a
    few 2 MB formula blocks.

    Args:
        x: ``m x C x [SPATIAL]`` images (rows).
        y: ``k x C x [SPATIAL]`` images (columns), same channel count and spatial shape as ``x``.
        kind: one of :data:`COST_KINDS`.
        spatial_dims: 2 or 3; inferred from ``x.ndim`` when ``None``.
        win_size, kernel_sigma, kernel_type, data_range, k1, k2, ssim_weight: as in :class:`SSIML1Loss`.
        max_bytes: scratch memory bound (bytes), default 1 GiB.

    Returns:
        ``(m, k)`` float32 tensor on ``x``'s device.

    Raises:
        ValueError: unknown ``kind``, mismatched shapes, or images smaller than the SSIM window.

    Example::

        cost = pairwise_cost(images, generator(lattice.points))   # (n, n)
        col_ind = solve_assignment(cost)
    """
    if kind not in COST_KINDS:
        raise ValueError(f"kind must be one of {COST_KINDS}, got {kind!r}.")
    if x.ndim < 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must be BxCx[SPATIAL] with the same C and spatial shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}."
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}.")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}.")
    if kind == "l2":
        return _pairwise_l2(x, y)
    if kind == "l1":
        return _pairwise_l1(x, y, max_bytes)
    if not 0.0 <= ssim_weight <= 1.0:
        raise ValueError(f"ssim_weight must lie in [0, 1], got {ssim_weight}.")
    spatial_dims = x.ndim - 2 if spatial_dims is None else spatial_dims
    window = SSIMWindow(spatial_dims, win_size, kernel_sigma, kernel_type, data_range, k1, k2)
    window.check_shape(x, "x")
    cost = torch.zeros(x.shape[0], y.shape[0], device=x.device)
    if ssim_weight > 0:
        cost += ssim_weight * (1.0 - _pairwise_ssim(x, y, window, max_bytes))
    if ssim_weight < 1:
        cost += (1.0 - ssim_weight) * _pairwise_l1(x, y, max_bytes)
    return cost

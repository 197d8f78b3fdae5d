"""SSIM-based metrics: the paper's real/fake pairs, paired-z reconstruction SSIM, MS-SSIM diversity."""

from __future__ import annotations

import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric

from .. import decode

__all__ = ["ms_ssim_diversity", "ms_ssim_settings", "paired_ssim", "random_pairs", "reconstruction_ssim"]


def random_pairs(n: int, m: int, num_pairs: int, seed: int = 0, distinct: bool = False) -> tuple[torch.Tensor, ...]:
    """Fixed random index pairs ``(i, j)``, ``i < n``, ``j < m`` (``distinct``: ``i != j``, for pairs within a set)."""
    if n < 1 or m < 1 or (distinct and max(n, m) < 2):
        raise ValueError(f"need non-empty sets (and 2 images for distinct pairs), got sizes {n} and {m}.")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (num_pairs,), generator=g)
    j = torch.randint(0, m, (num_pairs,), generator=g)
    if distinct:
        j = torch.where(i == j, (j + 1) % m, j)
    return i, j


def _ssim(x: torch.Tensor, y: torch.Tensor, win_size: int = 11) -> torch.Tensor:
    win = min(win_size, *x.shape[2:])
    win -= 1 - win % 2  # odd
    return SSIMMetric(spatial_dims=x.ndim - 2, win_size=win, reduction="none")(x.float(), y.float()).flatten()


def paired_ssim(real: torch.Tensor, fake: torch.Tensor, num_pairs: int = 50, seed: int = 0) -> float:
    """Mean SSIM over ``num_pairs`` fixed random (real, generated) pairs: the paper's SSIM (appendix E, 50 pairs).

    It rewards generated images that look like *some* real image in structure; compare models with it, but it
    is not a fidelity score for individual samples.
    """
    i, j = random_pairs(len(real), len(fake), num_pairs, seed)
    return float(_ssim(real[i], fake[j]).mean())


@torch.no_grad()
def reconstruction_ssim(generator: torch.nn.Module, codes: torch.Tensor, images: torch.Tensor,
                        labels: torch.Tensor | None = None, batch_size: int = 256) -> float:
    """Paired-z SSIM: mean SSIM of ``G(codes[i])`` and ``images[i]`` (training codes or :func:`embed` codes)."""
    return float(_ssim(decode(generator, codes, labels, batch_size, device="cpu"), images.cpu()).mean())


def ms_ssim_settings(spatial_shape: tuple[int, ...]) -> dict:
    """MS-SSIM settings that work at 28-64 px (MONAI's default 5 scales x 11 px window need >= 161 px).

    Window 3 below 64 px, 5 below 128 px, else 7; as many scales (up to 5) as keep the coarsest image at least
    twice the window; the standard scale weights, renormalized.
    """
    size = min(spatial_shape)
    window = 3 if size < 64 else 5 if size < 128 else 7
    scales = 1
    while scales < 5 and size // 2**scales >= 2 * window:
        scales += 1
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[:scales]
    total = sum(weights)
    return {"kernel_size": window, "weights": tuple(w / total for w in weights)}


def ms_ssim_diversity(fake: torch.Tensor, num_pairs: int = 200, seed: int = 0) -> float:
    """Mean MS-SSIM between ``num_pairs`` fixed random pairs of distinct generated images.

    Lower means more diverse samples; a collapsed generator scores near 1 (compare with the same value on real
    images). Settings from :func:`ms_ssim_settings`.
    """
    i, j = random_pairs(len(fake), len(fake), num_pairs, seed, distinct=True)
    metric = MultiScaleSSIMMetric(spatial_dims=fake.ndim - 2, reduction="none",
                                  **ms_ssim_settings(tuple(fake.shape[2:])))
    return float(metric(fake[i].float(), fake[j].float()).mean())

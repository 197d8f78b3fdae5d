"""Image grids of 2D slices (and middle slices of 3D volumes), as arrays and PNG files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["make_grid", "save_grid_png"]


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2,
              value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Tile ``N x C x [SPATIAL]`` images into one 8-bit grayscale (or RGB for 3 channels) array.

    3D volumes show their middle slice along the last axis; multi-channel images other than RGB show channel 0.

    Args:
        images: the images.
        nrow: images per row; default a near-square grid.
        padding: pixels between tiles (black).
        value_range: intensity range mapped to 0..255 (clipped).

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` uint8 array.
    """
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images.detach().cpu()).float()
    if x.ndim not in (4, 5) or x.shape[0] == 0:
        raise ValueError(f"images must be a non-empty N x C x [SPATIAL] batch, got shape {tuple(x.shape)}.")
    if x.ndim == 5:
        x = x[..., x.shape[-1] // 2]
    x = x if x.shape[1] == 3 else x[:, :1]
    lo, hi = value_range
    x = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    array = (grid * 255).round().byte().numpy()
    return array[0] if c == 1 else np.moveaxis(array, 0, -1)


def save_grid_png(images: torch.Tensor | np.ndarray, path: str | os.PathLike, nrow: int | None = None,
                  scale: int = 1, **kwargs) -> Path:
    """Save :func:`make_grid` of ``images`` as a PNG (nearest-neighbour upscaled by ``scale``); returns the path."""
    from PIL import Image

    grid = make_grid(images, nrow=nrow, **kwargs)
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

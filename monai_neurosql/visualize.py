"""Image grids of 2D slices (and middle slices of 3D volumes), as arrays and PNG files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torchvision

__all__ = ["make_grid", "save_grid_png"]


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2,
              value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Tile ``N x C x [SPATIAL]`` images into one 8-bit grayscale (or RGB for 3 channels) array.

    3D volumes show their middle slice along the last axis; multi-channel images other than RGB show channel 0.
    The tiling is :func:`torchvision.utils.make_grid` (black padding, row-major, at most ``nrow`` tiles a row).

    Args:
        images: the images.
        nrow: images per row; default a near-square grid.
        padding: pixels between tiles and around the grid (black).
        value_range: intensity range mapped to 0..255 (clipped).

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` uint8 array.
    """
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images.detach().cpu()).float()
    if x.ndim not in (4, 5) or x.shape[0] == 0:
        raise ValueError(f"images must be a non-empty N x C x [SPATIAL] batch, got shape {tuple(x.shape)}.")
    if x.ndim == 5:
        x = x[..., x.shape[-1] // 2]
    rgb = x.shape[1] == 3
    x = x if rgb else x[:, :1]
    grid = torchvision.utils.make_grid(x, nrow=nrow or math.ceil(math.sqrt(x.shape[0])), padding=padding,
                                       normalize=True, value_range=tuple(value_range))
    if x.shape[0] == 1:  # torchvision returns a single image without its border
        grid = torch.nn.functional.pad(grid, [padding] * 4)
    array = (grid * 255).round().byte().numpy()
    return np.moveaxis(array, 0, -1) if rgb else array[0]


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

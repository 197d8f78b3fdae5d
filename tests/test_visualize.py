from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_neurosql.visualize import make_grid, save_grid_png


def test_grid_layout_padding_and_value_range():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (0.0, 0.5, 1.0, 2.0, -1.0)])
    grid = make_grid(images, padding=1)  # 5 images: 3 per row, 2 rows
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1) and grid.dtype == np.uint8
    tiles = [grid[1 + r * 3 : 3 + r * 3, 1 + c * 4 : 4 + c * 4] for r in range(2) for c in range(3)]
    assert [int(t.min()) for t in tiles] == [int(t.max()) for t in tiles] == [0, 128, 255, 255, 0, 0]
    assert grid[0].max() == 0 and grid[:, 0].max() == 0  # black border
    assert make_grid(images[:, :, :, :2], nrow=5, padding=0, value_range=(0.0, 2.0))[0].tolist() == [
        0, 0, 64, 64, 128, 128, 255, 255, 0, 0]


def test_rgb_volumes_channels_and_single_images():
    rgb = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    grid = make_grid(rgb, padding=0)
    assert grid.shape == (4, 8, 3)
    np.testing.assert_array_equal(grid[:, :4], (rgb[0].permute(1, 2, 0) * 255).round().byte().numpy())
    volume = torch.zeros(1, 1, 4, 4, 5)
    volume[..., 2] = 1.0  # the middle slice along the last axis
    assert make_grid(volume, padding=2).shape == (8, 8) and make_grid(volume)[2:6, 2:6].min() == 255
    two_channels = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]
    assert make_grid(two_channels, padding=0).max() == 0  # channel 0 only
    with pytest.raises(ValueError, match="N x C"):
        make_grid(torch.rand(3, 4, 4))


def test_save_grid_png_upscales(tmp_path):
    images = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    path = save_grid_png(images, tmp_path / "sub" / "grid.png", scale=2)
    png = np.asarray(Image.open(path))
    np.testing.assert_array_equal(png, make_grid(images).repeat(2, 0).repeat(2, 1))

"""Write seeded synthetic images to disk: NIfTI files with the training spacing, a PNG grid and an index CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import nibabel as nib

from .generate import generate, labels_tensor as _labels_tensor
from .lattice import QuantileLattice
from .visualize import save_grid_png

__all__ = ["write_synthetic"]


def write_synthetic(
    generator: torch.nn.Module,
    num_samples: int,
    lattice: QuantileLattice,
    output_dir: str | os.PathLike,
    seed: int = 0,
    labels: int | Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    prefix: str = "synthetic",
    batch_size: int = 64,
    write_nifti: bool = True,
    grid_scale: int = 2,
) -> dict[str, object]:
    """Sample ``num_samples`` images (sampled-z mode, seeded) and write them.

    Writes ``<prefix>_NNNN.nii.gz`` (float32 in ``[0, 1]``, the affine set to ``spacing`` so viewers show the
    training resolution; several channels go last), ``<prefix>_grid.png`` and ``<prefix>.csv`` (file, label,
    seed) under ``output_dir``.

    Args:
        generator: trained generator.
        num_samples: number of images.
        lattice: training lattice (prior and dimension).
        output_dir: output folder.
        seed: sampling seed.
        labels: a class or one class per sample (class-conditional generators; default: all classes in turn).
        spacing: pixel/voxel spacing in mm (``data_info.json`` of the training run); default 1.0.
        prefix: file name prefix.
        batch_size: sampling batch size.
        write_nifti: also write the NIfTI files (the grid and CSV are always written).
        grid_scale: PNG grid upscaling.

    Returns:
        ``{"images": tensor, "files": [paths], "grid": path, "csv": path}``.
    """
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    num_classes = getattr(generator, "num_classes", None)
    if labels is None and num_classes:
        labels = (torch.arange(num_samples) % num_classes).tolist()  # every class, in turn
    images = generate(generator, num_samples, lattice, seed=seed, labels=labels, batch_size=batch_size)
    label_list = _labels_tensor(labels, num_samples)
    spatial_dims = images.ndim - 2
    spacing = [1.0] * spatial_dims if spacing is None else [float(s) for s in spacing][:spatial_dims]
    affine = torch.eye(4, dtype=torch.float64)
    affine[range(spatial_dims), range(spatial_dims)] = torch.tensor(spacing, dtype=torch.float64)
    files = []
    if write_nifti:
        for i in range(num_samples):
            path = out / f"{prefix}_{i:04d}.nii.gz"
            array = images[i].numpy().astype(np.float32)
            array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)  # channels last in NIfTI
            nib.save(nib.Nifti1Image(array, affine.numpy()), str(path))
            files.append(path)
    nrow = None
    if label_list is not None and len(torch.unique(label_list)) > 1:
        nrow = int(torch.bincount(label_list).max())
    grid = save_grid_png(images, out / f"{prefix}_grid.png", nrow=nrow, scale=grid_scale)
    table = out / f"{prefix}.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "seed", "index"])
        for i in range(num_samples):
            file = files[i].name if files else ""
            writer.writerow([file, "" if label_list is None else int(label_list[i]), seed, i])
    return {"images": images, "files": files, "grid": grid, "csv": table}

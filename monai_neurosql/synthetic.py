"""Write seeded synthetic images to disk: NIfTI files with the training spacing, a PNG grid and an index CSV."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from .generate import generate, labels_tensor
from .lattice import QuantileLattice
from .visualize import save_grid_png

__all__ = ["load_generator_checkpoint", "write_synthetic"]

logger = logging.getLogger(__name__)


def _previous_outputs(out: Path, prefix: str) -> list[Path]:
    pattern = re.compile(rf"^{re.escape(prefix)}(_\d{{4,}}\.nii\.gz|_grid\.png|\.csv)$")
    return sorted(p for p in out.iterdir() if p.is_file() and pattern.match(p.name)) if out.is_dir() else []


def load_generator_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint for inference (``weights_only=True``) and log which one it is.

    The bundles' inference, evaluation and export use ``models/model.pt`` by default: the last epoch (the end of the
    cosine schedule, or where early stopping or the stall rule ended the run). ``models/best.pt`` is the epoch with
    the lowest validation assignment cost (the paper's selection criterion); on Fashion-MNIST it held an earlier
    epoch whose samples were measurably further from the test images (``benchmarks/model_selection.py``,
    docs/benchmarks.md), so it is one ``ckpt_file`` away, not the default.

    Raises:
        FileNotFoundError: no such file, with what to run or pass instead.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        others = {"model.pt": "the last epoch", "best.pt": "the lowest validation assignment cost"}
        other = next((path.with_name(n) for n in others if n != path.name and path.with_name(n).is_file()), None)
        hint = (f"; {other} ({others[other.name]}) exists: pass ckpt_file={str(other)!r} to use it" if other
                else "; run the bundle's train.json first")
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found{hint}.")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    trainer = checkpoint.get("trainer", {})
    epoch = int(trainer.get("iteration", 0)) // max(int(trainer.get("epoch_length", 1) or 1), 1)
    logger.info(f"generating with the checkpoint {path} (saved at epoch {epoch})")
    return checkpoint


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
    overwrite: bool = False,
) -> dict[str, object]:
    """Sample ``num_samples`` images (sampled-z mode, seeded) and write them.

    Writes ``<prefix>_NNNN.nii.gz`` (float32 in ``[0, 1]``, the affine set to ``spacing`` so viewers show the
    training resolution; several channels go last), ``<prefix>_grid.png`` and ``<prefix>.csv`` (file, label,
    seed, index: exactly the files written) under ``output_dir``, and logs what it wrote.

    Outputs of two runs never mix: when ``output_dir`` already holds files of this ``prefix`` from an earlier run,
    it refuses (``FileExistsError``) unless ``overwrite=True``, which deletes those files first.

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
        overwrite: replace the outputs of an earlier run in ``output_dir``.

    Returns:
        ``{"images": tensor, "files": [paths], "grid": path, "csv": path}``.

    Raises:
        FileExistsError: earlier outputs in ``output_dir`` and ``overwrite=False``; ``output_dir`` is a file.
        ValueError: labels outside the generator's classes.
    """
    out = Path(output_dir).expanduser()
    if out.is_file():
        raise FileExistsError(f"output_dir {str(out)!r} is a file; pass a folder.")
    previous = _previous_outputs(out, prefix)
    if previous and not overwrite:
        raise FileExistsError(
            f"{str(out)!r} already holds {len(previous)} outputs of an earlier run ({previous[0].name}, ...); pass "
            "another output_dir, or overwrite=True to replace them."
        )
    num_classes = getattr(generator, "num_classes", None)
    if labels is None and num_classes:
        labels = (torch.arange(num_samples) % num_classes).tolist()  # every class, in turn
    if labels is not None and num_classes:
        asked = torch.as_tensor(labels).reshape(-1)
        if bool(((asked < 0) | (asked >= num_classes)).any()):
            raise ValueError(f"labels must lie in 0..{num_classes - 1} for this generator, got {asked.tolist()}.")
    for path in previous:
        path.unlink()
    if previous:
        logger.info(f"removed {len(previous)} outputs of an earlier run from {out} (overwrite=True)")
    out.mkdir(parents=True, exist_ok=True)
    images = generate(generator, num_samples, lattice, seed=seed, labels=labels, batch_size=batch_size)
    label_list = labels_tensor(labels, num_samples)
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
    logger.info(f"wrote {len(files)} NIfTI files ({files[0].name if files else '-'} .. "
                f"{files[-1].name if files else '-'}), {grid.name} and {table.name} to {out}")
    return {"images": images, "files": files, "grid": grid, "csv": table}

"""Read every image file once before any caching or training: refuse unreadable files by name, skip blank ones."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["check_image_files", "read_image_file"]

logger = logging.getLogger(__name__)

_PIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr", ".mgz", ".mgh")
_SHOWN = 5  # files named in a message


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """The pixel/voxel values of an image file as ``float32`` (colour images as luminance), fully decoded.

    JPEG/PNG/BMP/TIFF are read with Pillow, NIfTI/Analyze/MGH with nibabel (every voxel, so a truncated
    ``.nii.gz`` fails here), other suffixes with :class:`monai.transforms.LoadImage`.

    Raises:
        Whatever the reader raises for a damaged file (callers name the file).
    """
    name = str(path).lower()
    if name.endswith(_PIL_SUFFIXES):
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "I", "I;16", "F"):
                image = image.convert("L")
            return np.asarray(image, dtype=np.float32)
    if name.endswith(_NIBABEL_SUFFIXES):
        return np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32)
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(str(path)), dtype=np.float32)


def _inspect(path: str, lower: float, upper: float) -> tuple[str, str]:
    """``("ok" | "unreadable" | "non-finite" | "blank", detail)``; never raises (it runs in worker threads)."""
    try:
        values = read_image_file(path)
    except Exception as err:  # noqa: BLE001 - any reader failure is reported by file name from the calling thread
        return "unreadable", f"{type(err).__name__}: {err}".replace("\n", " ")
    if values.size == 0:
        return "unreadable", "no pixels"
    if not np.isfinite(values).all():
        return "non-finite", "NaN or infinite values"
    low, high = np.percentile(values, (lower, upper))
    if high <= low:
        return "blank", f"the {lower:g}th and {upper:g}th percentiles are both {low:g}"
    return "ok", ""


def _listing(items: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path!r} ({detail})" for path, detail in items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def check_image_files(
    records: Sequence[dict],
    image_key: str = "image",
    lower: float = 0.5,
    upper: float = 99.5,
    num_workers: int | None = None,
) -> list[dict]:
    """Decode every image file of ``records`` once, before datasets cache them or training starts.

    - Unreadable files (truncated or corrupt JPEG/PNG, truncated ``.nii.gz``, not an image) and files with NaN or
      infinite values: ``ValueError`` naming each file (the first five, and how many more) and the fix.
    - Blank files, whose ``lower`` and ``upper`` intensity percentiles coincide (all black, constant, or a few
      bright pixels on an empty background): the transform chains scale each image between those percentiles, so
      such an image has no usable contrast. A blank slice is a legitimate part of a scan, so these are skipped with
      a warning naming them; if every file is blank, ``ValueError``.

    The files are read by a thread pool; a reader's failure is caught in its thread and reported from the calling
    thread (an exception leaving a pool thread while other files are still being decoded is what aborted
    ``CacheDataset`` with ``terminate called without an active exception``).

    Args:
        records: dicts whose ``image_key`` is a file path.
        image_key: the path key.
        lower, upper: the percentiles the transform chain maps to 0 and 1 (:func:`slice_transforms` defaults).
        num_workers: reader threads; default ``min(8, cpu count)``.

    Returns:
        The records whose images are usable, in their order.

    Raises:
        ValueError: unreadable or non-finite files, or no usable file at all.
    """
    records = list(records)
    if not records:
        return records
    paths = [str(r[image_key]) for r in records]
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: _inspect(p, lower, upper), paths))
    bad = [(p, detail) for p, (status, detail) in zip(paths, results) if status in ("unreadable", "non-finite")]
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(paths)} image files cannot be used: {_listing(bad)}. Re-export or re-download "
            "them, or remove them from the dataset folder."
        )
    blank = [(p, detail) for p, (status, detail) in zip(paths, results) if status == "blank"]
    kept = [r for r, (status, _) in zip(records, results) if status == "ok"]
    if not kept:
        raise ValueError(f"all {len(paths)} image files are blank (no contrast), e.g. {_listing(blank)}; check the "
                         f"dataset folder {str(Path(paths[0]).parent)!r}.")
    if blank:
        logger.warning(f"skipping {len(blank)} of {len(paths)} blank images (no contrast between the {lower:g}th and "
                       f"{upper:g}th intensity percentiles): {_listing(blank)}")
    return kept

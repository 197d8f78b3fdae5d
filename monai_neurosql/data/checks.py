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

from ..utils import read_kept_files, write_kept_files

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


def file_stamp(path: str | os.PathLike) -> list[int] | None:
    """``[size, modification time in ns]`` of ``path`` (and of its Analyze partner: ``.img`` for ``.hdr`` and the
    reverse), ``None`` when it cannot be read (the decode names it). What the kept checks of files compare."""
    name = str(path)
    paths = [name]
    for one, other in ((".hdr", ".img"), (".img", ".hdr")):
        if name.lower().endswith(one) and os.path.exists(name[: -len(one)] + other):
            paths.append(name[: -len(one)] + other)
    stamp = []
    for each in paths:
        try:
            info = os.stat(each)
        except OSError:
            return None
        stamp += [info.st_size, info.st_mtime_ns]
    return stamp


def _write_verdicts(cache_file: str | os.PathLike, settings: dict, known: dict[str, list], paths: Sequence[str],
                    stamps: Sequence[list[int] | None], results: Sequence) -> None:
    """Keep the usable and blank verdicts (never an unreadable one: a fixed file must be read again)."""
    files = dict(known)
    for path, stamp, (status, detail) in zip(paths, stamps, results):
        if stamp is not None and status in ("ok", "blank"):
            files[path] = [*stamp, status, detail]
        else:
            files.pop(path, None)
    write_kept_files(cache_file, settings, files)


def _listing(items: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path!r} ({detail})" for path, detail in items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def check_image_files(
    records: Sequence[dict],
    image_key: str = "image",
    lower: float = 0.5,
    upper: float = 99.5,
    num_workers: int | None = None,
    cache_file: str | os.PathLike | None = None,
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
        cache_file: a JSON file keeping the verdicts of usable and blank files under their size and modification
            time (and ``lower``, ``upper``): a later check decodes only the files that changed since (a full
            Kaggle OASIS release, 86,437 slices, takes a minute or two to decode on two cores, at every run).
            Unreadable files are never kept, so a file is read again until it is fixed. Default ``None``: no cache.

    Returns:
        The records whose images are usable, in their order.

    Raises:
        ValueError: unreadable or non-finite files, or no usable file at all.
    """
    records = list(records)
    if not records:
        return records
    paths = [str(r[image_key]) for r in records]
    stamps = [file_stamp(p) for p in paths]
    settings = {"percentiles": [lower, upper]}  # ``{path: [*file_stamp(path), status, detail]}`` kept under them
    known = read_kept_files(cache_file, settings, logger, "decoding every file again")
    results: list[tuple[str, str] | None] = [None] * len(paths)
    for i, (path, stamp) in enumerate(zip(paths, stamps)):
        entry = known.get(path)
        if stamp is not None and entry is not None and entry[:-2] == stamp:
            results[i] = (entry[-2], entry[-1])
    todo = [i for i, r in enumerate(results) if r is None]
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, result in zip(todo, pool.map(lambda p: _inspect(p, lower, upper), [paths[i] for i in todo])):
            results[i] = result
    if cache_file is not None:
        logger.info(f"checked {len(paths)} image files: {len(paths) - len(todo)} unchanged since the check kept in "
                    f"{cache_file}, {len(todo)} decoded")
        if todo:
            _write_verdicts(cache_file, settings, known, paths, stamps, results)
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

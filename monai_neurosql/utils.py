"""Small helpers shared across the package."""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["DAMAGED_FILE_ERRORS", "atomic_write", "read_cache", "read_csv", "read_kept_files", "write_cache", "write_csv",
           "write_kept_files"]

#: what ``torch.load`` raises on a truncated or corrupted file (a write cut by a kill, a damaged disk)
DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends.

    A kill or an error mid-write leaves the previous ``path`` (or none), never a truncated file; on an error the
    temporary file is removed. The temporary name keeps ``path``'s extensions (``.<pid>.partial.<name>``), so
    writers that choose a format by extension (``nibabel.save``, ``numpy.savez``) write the same format.

    Example::

        with atomic_write(out / "samples.npz") as tmp:
            np.savez_compressed(tmp, images=images)
    """
    path = Path(path)
    tmp = path.with_name(f".{os.getpid()}.partial.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of the CSV file at ``path`` as dicts (``[]`` when there is no file)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str], append: bool = False) -> None:
    """Write ``rows`` (after the file's rows with ``append``) under the columns ``fields`` (a file written with other
    columns keeps its rows, under today's columns; keys outside ``fields`` are dropped). The whole file is written
    through :func:`atomic_write`, so a kill mid-write leaves the previous file, never a truncated one."""
    rows = (read_csv(path) if append else []) + list(rows)
    with atomic_write(path) as partial, open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_cache(path: str | os.PathLike, keys: Collection[str], log: logging.Logger, found: str,
               again: str) -> dict[str, Any] | None:
    """The dict that :func:`write_cache` left at ``path`` (logged as ``found``), or ``None``: no file, or a damaged
    one or one with other keys than ``keys``, which is removed with the warning ``"<path> cannot be used (<why>);
    <again>"``."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if set(cached) == set(keys):
            log.info(found)
            return cached
        error = f"keys {sorted(cached)}"
    except DAMAGED_FILE_ERRORS as err:
        error = f"{type(err).__name__}: {err}"
    log.warning(f"{path} cannot be used ({error}); {again}")
    path.unlink(missing_ok=True)
    return None


def write_cache(path: str | os.PathLike, value: dict[str, Any]) -> None:
    """``torch.save`` ``value`` to ``path`` (its folder made) through :func:`atomic_write`, for :func:`read_cache`."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as partial:
        torch.save(value, partial)


def read_kept_files(path: str | os.PathLike | None, settings: Mapping[str, Any], log: logging.Logger,
                    again: str) -> dict[str, list]:
    """``{file: entry}`` that :func:`write_kept_files` left in the JSON file ``path`` with the same ``settings`` (the
    top-level keys besides ``"files"``), or ``{}``: no file, other settings, or a damaged file (warned as
    ``"<path> cannot be used (<why>); <again>"``)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        kept = json.loads(Path(path).read_text())
        if all(kept.get(key) == value for key, value in settings.items()) and isinstance(kept.get("files"), dict):
            return kept["files"]
    except (OSError, ValueError, AttributeError) as err:
        log.warning(f"{path} cannot be used ({type(err).__name__}: {err}); {again}")
    return {}


def write_kept_files(path: str | os.PathLike, settings: Mapping[str, Any], files: Mapping[str, list]) -> None:
    """Write ``{**settings, "files": files}`` as JSON to ``path`` (its folder made) through :func:`atomic_write`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({**settings, "files": dict(files)}))

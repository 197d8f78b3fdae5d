"""Small helpers shared across the package."""

from __future__ import annotations

import csv
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DAMAGED_FILE_ERRORS", "atomic_write", "read_csv", "write_csv"]

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

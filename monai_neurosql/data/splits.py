"""Subject-stratified splits, written as MONAI datalist JSON so that a split can be reused and published."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..utils import atomic_write

__all__ = ["SPLIT_NAMES", "fractions_that_work", "read_datalist", "subject_stratified_split", "write_datalist"]

#: Split names, as in MONAI datalists.
SPLIT_NAMES = ("training", "validation", "test")


def _allocate(count: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``count``, proportional to ``fractions`` (largest remainder)."""
    raw = np.asarray(fractions, dtype=np.float64) * count
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: count - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _split_sizes(strata_sizes: Sequence[int], fractions: Sequence[float]) -> list[int]:
    """Subjects per split when each stratum is dealt by :func:`_allocate`."""
    totals = [0] * len(fractions)
    for size in strata_sizes:
        for i, count in enumerate(_allocate(size, fractions)):
            totals[i] += count
    return totals


def fractions_that_work(strata_sizes: Sequence[int], num_splits: int = 3, min_subjects: int = 1) -> list[float] | None:
    """The largest training fraction of 0.9, 0.8, ..., 0.1 (the rest shared equally), or equal fractions, that
    gives every split at least ``min_subjects`` subjects for these class sizes; ``None`` if none does."""
    for train in [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 1.0 / num_splits]:
        rest = round((1.0 - train) / (num_splits - 1), 4)
        fractions = [round(1.0 - rest * (num_splits - 1), 4)] + [rest] * (num_splits - 1)
        if min(_split_sizes(strata_sizes, fractions)) >= min_subjects:
            return fractions
    return None


def subject_stratified_split(
    records: Sequence[dict],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    stratify_by: str | None = "label",
    seed: int = 0,
    subject_key: str = "subject",
    min_subjects: int = 1,
) -> dict[str, list[dict]]:
    """Split records by subject: no subject is in two splits, and classes keep their proportions.

    Subjects are grouped by their class (the most common ``stratify_by`` value of their records; OASIS subjects
    have one), shuffled with ``seed`` within each class, and dealt to the splits in proportion to ``fractions``
    (largest remainder), so every split gets about ``fraction`` of each class's subjects. Records then get
    ``index``: their position in their split (``0..n-1``, the key of the latent bank for training).

    Args:
        records: dicts with ``subject_key`` (and ``stratify_by``).
        fractions: fractions of subjects for ``training``, ``validation``, ``test`` (a 2-tuple gives no test).
        stratify_by: record key to stratify on, or ``None``.
        seed: shuffling seed; the same records and seed always give the same split.
        subject_key: the subject key.
        min_subjects: fewest subjects a split with a non-zero fraction may get (checked before anything is
            trained; a split of 0 fraction may stay empty).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (copies of the records).

    Raises:
        ValueError: bad fractions, records without a subject, or a split with fewer than ``min_subjects``
            subjects (the message gives the subject counts and fractions that would work).
    """
    fractions = [float(f) for f in fractions]
    if not 2 <= len(fractions) <= 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}.")
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        subject = record.get(subject_key)
        if subject in (None, ""):
            raise ValueError(f"record {record.get('image', record)!r} has no {subject_key!r}; subject-stratified "
                             "splits need a subject for every record.")
        by_subject[str(subject)].append(record)
    strata: dict[object, list[str]] = defaultdict(list)
    for subject in sorted(by_subject):
        key = None if stratify_by is None else Counter(r.get(stratify_by) for r in by_subject[subject]).most_common(1)[0][0]
        strata[key].append(subject)
    names = SPLIT_NAMES[: len(fractions)]
    sizes = [len(strata[k]) for k in sorted(strata, key=str)]
    got = _split_sizes(sizes, fractions)
    short = [f"{name} {count}" for name, count, f in zip(names, got, fractions) if f > 0 and count < min_subjects]
    if short:
        works = fractions_that_work(sizes, len(fractions), min_subjects)
        advice = (f"fractions {works} would give {_split_sizes(sizes, works)} subjects" if works else
                  f"no fractions give {len(fractions)} splits of {min_subjects}+ subjects: add subjects or use "
                  "2 splits (training, validation)")
        raise ValueError(
            f"{len(by_subject)} subjects ({', '.join(f'{n} in class {k}' for k, n in zip(sorted(strata, key=str), sizes))}"
            f") split by class with fractions {fractions} leave {', '.join(short)} subject(s), fewer than "
            f"{min_subjects}; {advice}."
        )
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[str]] = {name: [] for name in names}
    for key in sorted(strata, key=str):
        subjects = list(strata[key])
        rng.shuffle(subjects)
        start = 0
        for name, count in zip(names, _allocate(len(subjects), fractions)):
            assigned[name] += subjects[start : start + count]
            start += count
    split: dict[str, list[dict]] = {}
    for name in names:
        items = [dict(r) for s in sorted(assigned[name]) for r in by_subject[s]]
        for i, item in enumerate(items):
            item["index"] = i
        split[name] = items
    return split


def write_datalist(
    split: dict[str, list[dict]], path: str | os.PathLike, base_dir: str | os.PathLike | None = None, **meta
) -> Path:
    """Write a split as a MONAI datalist JSON (``monai.data.load_decathlon_datalist`` reads it).

    File paths under ``base_dir`` are written relative to it (so the split can be published and reused with
    another copy of the data); in-memory arrays are not written (MedMNIST splits are the release's own).
    ``meta`` entries (seed, fractions, ...) go under ``"meta"`` with the class and subject counts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = None if base_dir is None else Path(base_dir).expanduser().resolve()
    out: dict = {}
    counts: dict = {}
    for name, items in split.items():
        rows = []
        for item in items:
            row = {}
            for k, v in item.items():
                if isinstance(v, np.ndarray) or hasattr(v, "shape"):
                    continue
                if k == "image" and base is not None:
                    p = Path(v).resolve()
                    v = str(p.relative_to(base)) if p.is_relative_to(base) else str(p)
                row[k] = v.item() if isinstance(v, np.generic) else v
            rows.append(row)
        out[name] = rows
        counts[name] = {
            "records": len(items),
            "subjects": len({i.get("subject") for i in items}),
            "labels": dict(sorted(Counter(str(i.get("label")) for i in items).items())),
        }
    out["meta"] = {"base_dir": None if base is None else str(base), "counts": counts, **meta}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    return path


def read_datalist(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    """Read a datalist written by :func:`write_datalist`; relative image paths are joined to ``base_dir``
    (default: the ``meta.base_dir`` stored in the file)."""
    data = json.loads(Path(path).read_text())
    base = base_dir if base_dir is not None else data.get("meta", {}).get("base_dir")
    split = {}
    for name in SPLIT_NAMES:
        if name in data:
            items = [dict(r) for r in data[name]]
            if base is not None:
                for item in items:
                    if "image" in item and not os.path.isabs(item["image"]):
                        item["image"] = os.path.join(base, item["image"])
            split[name] = items
    return split

"""OASIS records: the Kaggle slice release (class folders of JPEG slices) and OASIS-1 volumes with the CDR CSV."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..utils import atomic_write, read_kept_files, write_kept_files
from .checks import file_stamp

__all__ = [
    "OASIS_CLASSES",
    "cdr_to_class",
    "oasis_kaggle_records",
    "oasis_volume_records",
    "parse_oasis_filename",
    "slice_volume_records",
]

#: Class index -> name, ordered by severity (the Kaggle release's four folders; CDR 0, 0.5, 1, 2).
OASIS_CLASSES = ("Non Demented", "Very mild Dementia", "Mild Dementia", "Moderate Dementia")

# folder names as released on Kaggle and in the common re-uploads, lower-case letters only
_FOLDER_CLASSES = {
    "nondemented": 0, "nondementia": 0,
    "verymilddementia": 1, "verymilddemented": 1,
    "milddementia": 2, "milddemented": 2,
    "moderatedementia": 3, "moderatedemented": 3,
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_FILENAME = re.compile(
    r"^(?P<subject>OAS\d_\d{4})_(?P<session>MR\d+)_(?P<scan>[A-Za-z0-9-]+)_(?P<slice>\d+)\.(?:jpe?g|png)$",
    re.IGNORECASE,
)
_SESSION_DIR = re.compile(r"^(?P<subject>OAS\d_\d{4})_(?P<session>MR\d+)$", re.IGNORECASE)
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".img")

logger = logging.getLogger(__name__)


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder, or ``FileNotFoundError`` saying whether it is missing or a file."""
    root = Path(path).expanduser()
    if root.is_file():
        hint = " (unpack the archive first)" if root.suffix.lower() in (".zip", ".gz", ".tar", ".tgz", ".7z") else ""
        raise FileNotFoundError(f"{what} {str(root)!r} is a file, not a folder{hint}; pass the folder holding the "
                                "data.")
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {str(root)!r} does not exist.")
    return root


def _normalize_folder(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def parse_oasis_filename(path: str | os.PathLike) -> dict:
    """``OAS1_0028_MR1_mpr-1_100.jpg`` -> ``{"subject": "OAS1_0028", "session": "MR1", "scan": "mpr-1",
    "slice": 100}``.

    Raises:
        ValueError: the name carries no OASIS subject ID.
    """
    name = Path(path).name
    match = _FILENAME.match(name)
    if match is None:
        raise ValueError(
            f"cannot read a subject ID from {str(path)!r}: OASIS slice files are named like "
            "'OAS1_0028_MR1_mpr-1_100.jpg' (subject_session_scan_slice). Rename or remove the file; subject IDs "
            "are needed to split by subject without leakage."
        )
    info = match.groupdict()
    info["subject"] = info["subject"].upper()
    info["session"] = info["session"].upper()
    info["slice"] = int(info["slice"])
    return info


def _class_root(root: Path) -> Path:
    """The folder holding the class folders: ``root`` itself or its single sub-folder (e.g. ``Data/``)."""
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(_normalize_folder(p.name) in _FOLDER_CLASSES for p in subdirs):
        return root
    if len(subdirs) == 1:
        return _class_root(subdirs[0])
    return root


def oasis_kaggle_records(dataset_dir: str | os.PathLike) -> list[dict]:
    """Records of the Kaggle OASIS slice release (class folders of 8-bit JPEG axial slices).

    Accepts the folder holding ``Non Demented/``, ``Very mild Dementia/``, ``Mild Dementia/``,
    ``Moderate Dementia/`` (or the ``NonDemented``/``Very_Mild_Demented`` spellings), or a folder with a single
    sub-folder holding them.

    Returns:
        Records sorted by subject, session, slice: dicts with ``image`` (path), ``label`` (0-3, see
        :data:`OASIS_CLASSES`), ``subject``, ``session``, ``scan``, ``slice`` and ``record_index`` (stable position).

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: an unknown class folder, a file without a subject ID, or no slices at all.
    """
    root = check_folder(dataset_dir, "OASIS dataset folder")
    class_root = _class_root(root)
    records = []
    for folder in sorted(p for p in class_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = _FOLDER_CLASSES.get(_normalize_folder(folder.name))
        if label is None:
            raise ValueError(
                f"unknown OASIS class folder {str(folder)!r}; expected one of {list(OASIS_CLASSES)} (underscore or "
                "'Demented' spellings accepted). Move other folders out of the dataset folder."
            )
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES and not path.name.startswith("."):
                records.append({"image": str(path), "label": label, **parse_oasis_filename(path)})
    if not records:
        raise ValueError(
            f"no OASIS slices (.jpg/.jpeg/.png) found under {str(root)!r}; point dataset_dir at the folder holding "
            f"the class folders {list(OASIS_CLASSES)}."
        )
    records.sort(key=lambda r: (r["subject"], r["session"], r["slice"], r["image"]))
    for i, record in enumerate(records):
        record["record_index"] = i
    _warn_subjects_in_several_classes(records)
    return records


def _warn_subjects_in_several_classes(records: Sequence[dict]) -> None:
    """A subject in two class folders keeps all its slices in one split, but its label is ambiguous: say so."""
    labels: dict[str, set[int]] = {}
    for record in records:
        labels.setdefault(record["subject"], set()).add(record["label"])
    mixed = {s: sorted(v) for s, v in labels.items() if len(v) > 1}
    if mixed:
        shown = ", ".join(f"{s} in {[OASIS_CLASSES[c] for c in v]}" for s, v in list(mixed.items())[:5])
        more = f" and {len(mixed) - 5} more" if len(mixed) > 5 else ""
        logger.warning(
            f"{len(mixed)} subjects have slices in more than one class folder ({shown}{more}): each stays in one "
            "split (split by its most common class), and each slice keeps the label of its folder. If these are "
            "copying mistakes, move the slices into one class folder."
        )


def cdr_to_class(cdr: float | None, missing: int | None = 0) -> int | None:
    """Clinical Dementia Rating to the four OASIS classes: 0 -> 0, 0.5 -> 1, 1 -> 2, >= 2 -> 3.

    ``missing`` is the class of a blank CDR (young controls in OASIS-1 have none); ``None`` drops them.
    """
    if cdr is None or (isinstance(cdr, float) and np.isnan(cdr)):
        return missing
    return {0.0: 0, 0.5: 1, 1.0: 2}.get(float(cdr), 3)


def _read_cdr_csv(csv_path: Path) -> dict[str, float | None]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"OASIS clinical CSV {str(csv_path)!r} does not exist (oasis_cross-sectional.csv).")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields = {k.strip().lower(): k for k in (reader.fieldnames or [])}
        if "id" not in fields or "cdr" not in fields:
            raise ValueError(f"{str(csv_path)!r} needs the columns 'ID' and 'CDR' (the OASIS cross-sectional CSV), "
                             f"found {reader.fieldnames}.")
        table = {}
        for row in reader:
            value = (row[fields["cdr"]] or "").strip()
            table[row[fields["id"]].strip().upper()] = float(value) if value not in ("", "N/A", "NA") else None
    return table


def oasis_volume_records(
    dataset_dir: str | os.PathLike,
    csv_path: str | os.PathLike,
    missing_cdr_class: int | None = 0,
    prefer: Sequence[str] = ("masked_gfc", "t88_gfc", "n4"),
) -> list[dict]:
    """Records of OASIS-1 volumes: one folder per session (``OAS1_0001_MR1``), NIfTI or Analyze inside.

    The volume of a session is the first ``.nii.gz``/``.nii``/``.img`` under its folder whose name contains a
    string of ``prefer`` (tried in order; e.g. the atlas-registered, skull-stripped ``..._t88_masked_gfc.img``),
    else the first found. Labels come from the CDR column of the cross-sectional CSV (:func:`cdr_to_class`).

    Returns:
        Records with ``image``, ``label``, ``subject``, ``session``, ``record_index``.

    Raises:
        FileNotFoundError: missing folder or CSV. ValueError: no session folders, a session absent from the CSV.
    """
    root = check_folder(dataset_dir, "OASIS volume folder")
    cdr = _read_cdr_csv(Path(csv_path).expanduser())
    records = []
    for session_dir in sorted(p for p in root.rglob("*") if p.is_dir() and _SESSION_DIR.match(p.name)):
        volumes = sorted(p for p in session_dir.rglob("*") if p.is_file() and p.name.lower().endswith(_VOLUME_SUFFIXES))
        if not volumes:
            continue
        chosen = next((v for key in prefer for v in volumes if key in v.name.lower()), volumes[0])
        session_id = session_dir.name.upper()
        if session_id not in cdr:
            raise ValueError(f"session {session_id} ({str(session_dir)!r}) is not in the clinical CSV; add its row or "
                             "remove the folder.")
        label = cdr_to_class(cdr[session_id], missing_cdr_class)
        if label is None:
            continue
        info = _SESSION_DIR.match(session_dir.name).groupdict()
        records.append({"image": str(chosen), "label": label, "subject": info["subject"].upper(),
                        "session": info["session"].upper()})
    if not records:
        raise ValueError(f"no OASIS session folders (OAS1_xxxx_MRy) with volumes found under {str(root)!r}.")
    for i, record in enumerate(records):
        record["record_index"] = i
    return records


def slice_volume_records(
    records: Sequence[dict],
    out_dir: str | os.PathLike,
    axial_range: tuple[float, float] = (0.3, 0.7),
    min_foreground: float = 0.05,
    step: int = 1,
) -> list[dict]:
    """2D axial slices of volume records, written once as NIfTI files under ``out_dir`` (a cache).

    Each volume is reoriented to RAS; the axial slices whose relative height lies in ``axial_range`` and whose
    foreground (voxels above 10% of the volume's 99th percentile) covers at least ``min_foreground`` of the slice
    are kept, every ``step``-th. Slices keep the in-plane voxel spacing.

    ``out_dir/slices.json`` keeps, per volume, its size and modification time and the slices cut from it: a later
    call with the same settings reads no volume whose file is unchanged and whose slices are all there (a full
    OASIS-1 release is 416 volumes, read at every run before); a changed volume is read and its slices written again.

    Returns:
        Slice records (``image`` = slice file, ``slice`` = axial index, plus the volume's label/subject/session).
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "slices.json"
    settings = {"settings": [list(axial_range), min_foreground, step]}  # ``{volume: [file_stamp, [axial indices]]}``
    kept = read_kept_files(manifest_path, settings, logger, "reading every volume again")
    volumes, changed, slices = {}, False, []
    for record in records:
        source = str(record["image"])
        stamp = file_stamp(source)
        entry = kept.get(source)
        name = f"{record['subject']}_{record['session']}_axial_"
        if (stamp is not None and entry is not None and entry[0] == stamp
                and all((out / f"{name}{z:03d}.nii.gz").is_file() for z in entry[1])):
            planes = entry[1]
        else:
            planes, changed = _cut_slices(record, out / name, axial_range, min_foreground, step), True
        if stamp is not None:
            volumes[source] = [stamp, planes]
        slices += [{**{k: v for k, v in record.items() if k != "record_index"}, "image": str(out / f"{name}{z:03d}.nii.gz"),
                    "slice": z} for z in planes]
    if changed:
        write_kept_files(manifest_path, settings, {**kept, **volumes})
    for i, record in enumerate(slices):
        record["record_index"] = i
    return slices


def _cut_slices(record: dict, prefix: Path, axial_range: tuple[float, float], min_foreground: float,
                step: int) -> list[int]:
    """Read ``record``'s volume, write its kept axial slices as ``<prefix><z:03d>.nii.gz``, return their indices."""
    try:
        img = nib.as_closest_canonical(nib.load(record["image"]))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - EOFError (truncated .nii.gz), zlib/OSError, nibabel errors
        raise ValueError(
            f"cannot read volume {record['image']!r} ({type(err).__name__}: {err}); the file is truncated or "
            "damaged: re-download it or remove its session folder."
        ) from None
    data = data.reshape(data.shape[:3])
    if not np.isfinite(data).all():
        raise ValueError(f"volume {record['image']!r} contains NaN or infinite values; fix or remove it.")
    depth = data.shape[2]
    lo, hi = int(axial_range[0] * depth), int(np.ceil(axial_range[1] * depth))
    threshold = 0.1 * np.percentile(data, 99)
    zooms = img.header.get_zooms()[:2]
    planes = []
    for z in range(lo, min(hi, depth), step):
        plane = data[:, :, z]
        if (plane > threshold).mean() < min_foreground:
            continue
        # written under a temporary name, so a killed run leaves no half file; written again when the volume changed
        with atomic_write(f"{prefix}{z:03d}.nii.gz") as tmp:
            nib.save(nib.Nifti1Image(plane, np.diag([*zooms, 1.0, 1.0])), str(tmp))
        planes.append(z)
    return planes

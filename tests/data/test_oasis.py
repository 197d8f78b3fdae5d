from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_neurosql.data import (
    OASIS_CLASSES,
    cdr_to_class,
    oasis_kaggle_records,
    oasis_volume_records,
    parse_oasis_filename,
    slice_transforms,
    slice_volume_records,
)
from tests.data.conftest import write_slice


def test_kaggle_records(kaggle_dir):
    records = oasis_kaggle_records(kaggle_dir)  # the class folders sit one level down, in Data/
    assert len(records) == 36
    first = records[0]
    assert first["subject"] == "OAS1_0001" and first["session"] == "MR1" and first["scan"] == "mpr-1"
    assert first["slice"] == 100 and first["label"] == 0 and first["record_index"] == 0
    assert [r["record_index"] for r in records] == list(range(36))
    assert {r["label"] for r in records if r["subject"] == "OAS1_0004"} == {1}  # Very_Mild_Demented
    assert sorted({r["label"] for r in records}) == [0, 1, 2, 3]
    assert records == oasis_kaggle_records(kaggle_dir)  # stable


def test_filename_parsing():
    assert parse_oasis_filename("x/OAS1_0028_MR1_mpr-1_100.jpg") == {
        "subject": "OAS1_0028", "session": "MR1", "scan": "mpr-1", "slice": 100}
    with pytest.raises(ValueError, match="cannot read a subject ID from 'scan_100.jpg'"):
        parse_oasis_filename("scan_100.jpg")


def test_kaggle_errors(tmp_path, kaggle_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        oasis_kaggle_records(tmp_path / "missing")
    (tmp_path / "empty" / "Non Demented").mkdir(parents=True)
    with pytest.raises(ValueError, match="no OASIS slices"):
        oasis_kaggle_records(tmp_path / "empty")
    (kaggle_dir / "Data" / "Severe").mkdir()
    with pytest.raises(ValueError, match=r"unknown OASIS class folder .*Severe"):
        oasis_kaggle_records(kaggle_dir)
    (kaggle_dir / "Data" / "Severe").rmdir()
    write_slice(kaggle_dir / "Data" / "Mild Dementia" / "brain_7.jpg")
    with pytest.raises(ValueError, match="brain_7.jpg"):
        oasis_kaggle_records(kaggle_dir)


def _messages(excinfo) -> str:
    """All messages of an exception chain (MONAI's Compose wraps transform errors in a RuntimeError)."""
    err, parts = excinfo.value, []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__
    return " | ".join(parts)


def test_truncated_and_nan_images_name_the_file(tmp_path):
    good = tmp_path / "OAS1_0001_MR1_mpr-1_100.jpg"
    write_slice(good)
    data = good.read_bytes()
    bad = tmp_path / "OAS1_0002_MR1_mpr-1_100.jpg"
    bad.write_bytes(data[: len(data) // 3])
    transform = slice_transforms(32)
    assert transform({"image": str(good)})["image"].shape == (1, 32, 32)
    with pytest.raises(RuntimeError) as excinfo:
        transform({"image": str(bad)})
    assert "cannot read image" in _messages(excinfo) and "OAS1_0002_MR1_mpr-1_100.jpg" in _messages(excinfo)
    nan_file = tmp_path / "nan_slice.nii.gz"
    array = np.ones((20, 20), dtype=np.float32)
    array[3, 4] = np.nan
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(nan_file))
    with pytest.raises(RuntimeError) as excinfo:
        transform({"image": str(nan_file)})
    assert "nan_slice.nii.gz contains NaN" in _messages(excinfo)


@pytest.fixture
def volume_dir(tmp_path):
    """Three OASIS-1 sessions (NIfTI and Analyze) and the clinical CSV."""
    root = tmp_path / "oasis1"
    rng = np.random.default_rng(0)
    for i, (sid, cdr) in enumerate([("OAS1_0001_MR1", "0"), ("OAS1_0002_MR1", "0.5"), ("OAS1_0003_MR1", "")]):
        folder = root / sid / "PROCESSED" / "MPRAGE" / "T88_111"
        folder.mkdir(parents=True)
        vol = np.zeros((24, 28, 20), dtype=np.float32)
        vol[4:20, 4:24, 2:18] = rng.uniform(50, 100, size=(16, 20, 16))
        img = nib.Nifti1Image(vol, np.diag([1.0, 1.0, 1.0, 1.0]))
        if i == 1:
            nib.save(nib.AnalyzeImage(vol, np.eye(4)), str(folder / f"{sid}_mpr_n4_anon_111_t88_masked_gfc.img"))
        else:
            nib.save(img, str(folder / f"{sid}_t88_masked_gfc.nii.gz"))
    csv = tmp_path / "oasis_cross-sectional.csv"
    csv.write_text("ID,M/F,Age,CDR\nOAS1_0001_MR1,F,74,0\nOAS1_0002_MR1,M,80,0.5\nOAS1_0003_MR1,F,21,\n")
    return root, csv


def test_volume_records_and_slicing(volume_dir, tmp_path):
    root, csv = volume_dir
    records = oasis_volume_records(root, csv)
    assert [r["label"] for r in records] == [0, 1, 0]  # blank CDR -> non-demented by default
    assert records[1]["image"].endswith(".img")
    assert len(oasis_volume_records(root, csv, missing_cdr_class=None)) == 2
    slices = slice_volume_records(records, tmp_path / "slices", axial_range=(0.0, 1.0), min_foreground=0.2)
    # only axial slices 2..17 hold the head; the empty ones are skipped
    assert {s["slice"] for s in slices if s["subject"] == "OAS1_0001"} == set(range(2, 18))
    image = slice_transforms(16)({"image": slices[0]["image"]})["image"]
    assert image.shape == (1, 16, 16) and 0 <= image.min() and image.max() <= 1
    csv.write_text("ID,CDR\nOAS1_0001_MR1,0\n")
    with pytest.raises(ValueError, match="OAS1_0002_MR1 .* not in the clinical CSV"):
        oasis_volume_records(root, csv)
    csv.write_text("Subject,Rating\n")
    with pytest.raises(ValueError, match="'ID' and 'CDR'"):
        oasis_volume_records(root, csv)


def test_volume_slicing_reads_only_changed_volumes_on_later_runs(volume_dir, tmp_path, monkeypatch):
    from monai_neurosql.data import oasis

    root, csv = volume_dir
    records = oasis_volume_records(root, csv)
    out = tmp_path / "slices"
    first = slice_volume_records(records, out, axial_range=(0.0, 1.0), min_foreground=0.2)
    cut = []
    cutter = oasis._cut_slices
    monkeypatch.setattr(oasis, "_cut_slices", lambda record, *args: cut.append(record["subject"]) or cutter(record, *args))
    assert slice_volume_records(records, out, axial_range=(0.0, 1.0), min_foreground=0.2) == first and cut == []
    # a volume changed on disk (the Analyze .img of an .hdr/.img pair too), or a slice file gone: read again
    volume = Path(records[0]["image"])
    vol = np.zeros((24, 28, 20), dtype=np.float32)
    vol[4:20, 4:24, 6:10] = 80.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(volume))
    analyze = Path(records[1]["image"]).with_suffix(".hdr")  # the record names the .img
    assert analyze.is_file()
    analyze.write_bytes(analyze.read_bytes())
    os.utime(analyze, ns=(analyze.stat().st_atime_ns, analyze.stat().st_mtime_ns + 10**9))
    (out / f"{records[2]['subject']}_{records[2]['session']}_axial_005.nii.gz").unlink()
    again = slice_volume_records(records, out, axial_range=(0.0, 1.0), min_foreground=0.2)
    assert cut == ["OAS1_0001", "OAS1_0002", "OAS1_0003"]
    assert {s["slice"] for s in again if s["subject"] == "OAS1_0001"} == set(range(6, 10))
    written = nib.load(next(s["image"] for s in again if s["subject"] == "OAS1_0001" and s["slice"] == 7))
    assert float(np.asarray(written.dataobj).max()) == 80.0  # the slice file of the new volume, not the old one
    # other settings: every volume read again
    cut.clear()
    slice_volume_records(records, out, axial_range=(0.0, 1.0), min_foreground=0.1)
    assert len(cut) == 3


def test_cdr_mapping():
    assert [cdr_to_class(v) for v in (0, 0.5, 1, 2, 3, None)] == [0, 1, 2, 3, 3, 0]
    assert cdr_to_class(None, missing=None) is None
    assert len(OASIS_CLASSES) == 4

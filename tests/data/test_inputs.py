"""Issue 10: every input is read correctly or refused up front with the file (and npz key) named and the fix said."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from monai_neurosql.data import (
    array_transforms,
    check_image_files,
    intensity_rule,
    medmnist_records,
    oasis_kaggle_records,
    prepare_medmnist_split,
    prepare_oasis_split,
    slice_transforms,
    slice_volume_records,
)
from tests.data.conftest import write_slice
from tests.data.test_medmnist import write_npz

RNG = np.random.default_rng(0)


def _train_image(path, spatial_dims=2):
    record = medmnist_records(path)["training"][0]
    return array_transforms(spatial_dims=spatial_dims)(record)["image"]


# ---------------------------------------------------------------- MedMNIST-layout dtypes (issue 10, case 3)
def test_float_images_in_unit_range_are_kept_as_they_are(tmp_path):
    images = RNG.uniform(0, 1, (6, 28, 28)).astype(np.float32)
    path = write_npz(tmp_path / "f.npz", train_images=images, val_images=images[:3], test_images=images[:4])
    out = _train_image(path)
    np.testing.assert_allclose(out[0].numpy(), images[0], atol=1e-6)  # was /255: max 0.0037


def test_int16_images_get_one_min_max_map_per_file(tmp_path, caplog):
    train = RNG.integers(-1000, 3000, (6, 28, 28)).astype(np.int16)
    val = RNG.integers(-1000, 3000, (3, 28, 28)).astype(np.int16)
    val[0, 0, 0], train[1, 0, 0] = -1024, 3071  # the file's extremes sit in different splits
    test = RNG.integers(0, 10, (4, 28, 28)).astype(np.int16)
    path = write_npz(tmp_path / "ct.npz", train_images=train, val_images=val, test_images=test)
    with caplog.at_level(logging.INFO, logger="monai_neurosql.data.medmnist"):
        split = medmnist_records(path)
    assert "int16 min-max over the file [-1024, 3071]" in caplog.text
    image = array_transforms()(split["training"][0])["image"]
    np.testing.assert_allclose(image[0].numpy(), (train[0] + 1024) / 4095, atol=1e-6)  # not clipped to white
    assert float(array_transforms()(split["training"][1])["image"].max()) == pytest.approx(1.0)
    assert float(array_transforms()(split["validation"][0])["image"].min()) == pytest.approx(0.0)


@pytest.mark.parametrize("dtype,values,rule,expected", [
    (np.uint8, [0, 255], "uint8 / 255", [0.0, 1.0]),
    (np.int64, [0, 200], "int64 in [0, 255] / 255", [0.0, 200 / 255]),
    (np.uint16, [100, 4100], "uint16 min-max over the file [100, 4100]", [0.0, 1.0]),
    (np.float64, [-2.0, 2.0], "float64 min-max over the file [-2, 2]", [0.0, 1.0]),
    (np.bool_, [False, True], "bool as 0/1", [0.0, 1.0]),
])
def test_intensity_rules(dtype, values, rule, expected):
    images = np.array(values, dtype=dtype).reshape(1, 1, 2)
    name, low, high = intensity_rule(images)
    assert name == rule
    if dtype is not np.bool_:
        np.testing.assert_allclose((images.astype(float) - low) / (high - low), np.reshape(expected, (1, 1, 2)))


@pytest.mark.parametrize("override,match", [
    ({f"{k}_images": np.full((n, 28, 28), 7, np.int16) for k, n in (("train", 6), ("val", 3), ("test", 4))},
     "keys train/val/test_images: every image has the value 7"),
    ({f"{k}_images": np.full((n, 28, 28), np.nan, np.float32) for k, n in (("train", 6), ("val", 3), ("test", 4))},
     "train/val/test_images: holds NaN"),
    ({"train_images": RNG.uniform(0, 1, (6, 28, 28)).astype(np.float32)}, "different dtypes"),
    ({"train_images": np.zeros((6, 28, 28), np.complex64)}, "key 'train_images': dtype complex64 is not an image"),
    ({"val_labels": np.array([[0], [-1], [2]])}, "key 'val_labels': label -1 is negative"),
    ({"train_labels": np.array([[0.5]] * 6)}, "key 'train_labels': labels must be whole numbers"),
])
def test_bad_arrays_are_refused_with_file_and_key(tmp_path, override, match):
    path = write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(ValueError, match=rf"bad\.npz.*{match}"):
        medmnist_records(path)


def test_labels_are_checked_against_the_number_of_classes(tmp_path):
    path = write_npz(tmp_path / "l.npz", n=(6, 3, 4), test_labels=np.array([[0], [6], [7], [1]]))
    with pytest.raises(ValueError, match=r"l\.npz', key 'test_labels': label 7 is out of range for num_classes=7 "
                                         r"\(classes 0..6\); set num_classes to 8"):
        prepare_medmnist_split(npz_file=str(path), num_classes=7)
    assert len(prepare_medmnist_split(npz_file=str(path), num_classes=8)["test"]) == 4
    with pytest.raises(ValueError, match="max_train must be at least 1"):
        prepare_medmnist_split(npz_file=str(path), max_train=0)


def test_object_arrays_and_folders_are_refused_by_name(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "ok.npz")))
    arrays["val_images"] = np.array([np.zeros((28, 28)), np.zeros((28, 28))] + [None], dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays, allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npz', key 'val_images': holds Python objects \(dtype=object"):
        medmnist_records(tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError, match="is a folder, not a file"):
        medmnist_records(tmp_path)


@pytest.mark.parametrize("shape,spatial_dims,channels", [
    ((28, 28, 3), 2, 3),        # PathMNIST, DermaMNIST, BloodMNIST...
    ((28, 28, 1), 2, 1),
    ((8, 8, 8, 3), 3, 3),       # a 3D RGB set
    ((8, 8, 8), 3, 1),
])
def test_rgb_and_grey_in_2d_and_3d(tmp_path, shape, spatial_dims, channels):
    images = {f"{s}_images": RNG.integers(0, 256, (n, *shape), dtype=np.uint8) for s, n in (("train", 6), ("val", 3),
                                                                                            ("test", 4))}
    path = write_npz(tmp_path / "c.npz", **images)
    split = medmnist_records(path, spatial_dims=spatial_dims)
    out = array_transforms(spatial_dims=spatial_dims)(split["training"][2])["image"]
    assert out.shape == (channels, *shape[:spatial_dims])
    expected = np.moveaxis(images["train_images"][2], -1, 0) if len(shape) > spatial_dims else images["train_images"][2]
    np.testing.assert_allclose(out.numpy().reshape(expected.shape), expected / 255.0, atol=1e-6)


# ---------------------------------------------------------------- image files (issue 10, cases 6 and 9)
def _kaggle(root, per_class=(3, 3, 3, 3)):
    folders = ["Non Demented", "Very mild Dementia", "Mild Dementia", "Moderate Dementia"]
    subject = 0
    for label, count in enumerate(per_class):
        for _ in range(count):
            subject += 1
            for s in (100, 101):
                write_slice(root / folders[label] / f"OAS1_{subject:04d}_MR1_mpr-1_{s}.jpg", value=120 + 30 * label,
                            seed=subject * 1000 + s)
    return root


def test_corrupt_jpeg_is_named_before_any_caching(tmp_path):
    root = _kaggle(tmp_path / "kaggle")
    bad = root / "Mild Dementia" / "OAS1_0007_MR1_mpr-1_100.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"^1 of 24 image files cannot be used: '.*OAS1_0007_MR1_mpr-1_100\.jpg' "
                                         r"\(OSError: (?i:.*truncated.*)\)\. Re-export or re-download them"):
        prepare_oasis_split(root, tmp_path / "out", fractions=(0.5, 0.25, 0.25))
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"OAS1_0007_MR1_mpr-1_100\.jpg' \(UnidentifiedImageError"):
        check_image_files(oasis_kaggle_records(root))


def test_blank_slices_are_skipped_with_a_warning(tmp_path, caplog):
    root = _kaggle(tmp_path / "kaggle")
    black = root / "Non Demented" / "OAS1_0001_MR1_mpr-1_100.jpg"
    write_slice(black, value=0)  # all black: ZeroDivisionError inside Resized before, found during caching
    with caplog.at_level(logging.WARNING):
        split = prepare_oasis_split(root, tmp_path / "out", fractions=(0.5, 0.25, 0.25))
    assert "skipping 1 of 24 blank images" in caplog.text and "OAS1_0001_MR1_mpr-1_100.jpg" in caplog.text
    assert str(black) not in [r["image"] for items in split.values() for r in items]
    assert sum(len(items) for items in split.values()) == 23
    for record in split["training"][:3]:  # every image that is kept goes through the chain into [0, 1]
        image = slice_transforms(32)(record)["image"]
        assert image.shape == (1, 32, 32) and float(image.min()) >= 0 and 0.5 < float(image.max()) <= 1


def test_truncated_nifti_volume_is_named(tmp_path):
    path = tmp_path / "OAS1_0001_MR1" / "vol.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(RNG.uniform(0, 100, (24, 24, 20)).astype(np.float32), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[:-2000])
    record = {"image": str(path), "label": 0, "subject": "OAS1_0001", "session": "MR1"}
    with pytest.raises(ValueError, match=r"cannot read volume '.*vol\.nii\.gz' \(EOFError.*truncated or damaged"):
        slice_volume_records([record], tmp_path / "slices")
    with pytest.raises(ValueError, match=r"1 of 1 image files cannot be used: '.*vol\.nii\.gz' \(EOFError"):
        check_image_files([record])


def test_dataset_dir_that_is_a_file_says_so(tmp_path):
    archive = tmp_path / "oasis.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"dataset_dir '.*oasis\.zip' is a file, not a folder \(unpack"):
        prepare_oasis_split(archive, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_oasis_split(tmp_path / "missing", tmp_path / "out")


def test_subject_in_two_class_folders_warns(tmp_path, caplog):
    root = _kaggle(tmp_path / "kaggle")
    write_slice(root / "Moderate Dementia" / "OAS1_0001_MR1_mpr-1_120.jpg")
    with caplog.at_level(logging.WARNING):
        records = oasis_kaggle_records(root)
    assert "1 subjects have slices in more than one class folder (OAS1_0001 in ['Non Demented', 'Moderate " \
           "Dementia'])" in caplog.text
    assert {r["label"] for r in records if r["subject"] == "OAS1_0001"} == {0, 3}


def test_too_few_subjects_for_the_split_are_refused_before_training(tmp_path):
    # 3 subjects per class: the validation split used to be empty, found only after the first epoch
    root = _kaggle(tmp_path / "kaggle")
    with pytest.raises(ValueError, match=r"12 subjects .* leave validation 0, test 0 subject\(s\), fewer than 1; "
                                         r"fractions \[0.5, 0.25, 0.25\] would give \[4, 4, 4\] subjects"):
        prepare_oasis_split(root, tmp_path / "out")
    root3 = _kaggle(tmp_path / "three", per_class=(3, 0, 0, 0))
    with pytest.raises(ValueError, match=r"3 subjects \(3 in class 0\) .* leave validation 0, test 0"):
        prepare_oasis_split(root3, tmp_path / "out3")


def test_kept_image_checks_decode_only_changed_files(tmp_path, caplog, monkeypatch):
    from monai_neurosql.data import checks

    root = _kaggle(tmp_path / "kaggle")
    black = root / "Non Demented" / "OAS1_0001_MR1_mpr-1_100.jpg"
    write_slice(black, value=0)
    out = tmp_path / "out"
    first = prepare_oasis_split(root, out, fractions=(0.5, 0.25, 0.25))
    decoded = []
    reader = checks.read_image_file
    monkeypatch.setattr(checks, "read_image_file", lambda path: decoded.append(str(path)) or reader(path))
    with caplog.at_level(logging.WARNING):
        again = prepare_oasis_split(root, out, fractions=(0.5, 0.25, 0.25))
    assert decoded == [] and again == first  # the same split, the blank file still skipped with its warning
    assert "skipping 1 of 24 blank images" in caplog.text and "OAS1_0001_MR1_mpr-1_100.jpg" in caplog.text
    # a file damaged after the kept check is decoded again and named; it is never kept as a verdict
    bad = root / "Mild Dementia" / "OAS1_0007_MR1_mpr-1_100.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^1 of 24 image files cannot be used: '.*OAS1_0007_MR1_mpr-1_100\.jpg'"):
            prepare_oasis_split(root, out, fractions=(0.5, 0.25, 0.25))
    assert decoded == [str(bad), str(bad)]
    # other percentiles, or a damaged file of verdicts: every file is decoded again
    write_slice(bad, value=150, seed=7)
    decoded.clear()
    assert len(check_image_files(oasis_kaggle_records(root), lower=1, upper=99, cache_file=out / "image_checks.json")) == 23
    assert len(decoded) == 24
    (out / "image_checks.json").write_text("{not json")
    decoded.clear()
    with caplog.at_level(logging.WARNING):
        assert len(check_image_files(oasis_kaggle_records(root), cache_file=out / "image_checks.json")) == 23
    assert len(decoded) == 24 and "image_checks.json cannot be used (JSONDecodeError" in caplog.text

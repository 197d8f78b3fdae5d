from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_neurosql.data import build_oasis_demo, oasis_kaggle_records, slice_transforms, volume_transforms


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_oasis_demo(tmp_path_factory.mktemp("demo"), subjects_per_class=(3, 3, 3, 3), slices_per_subject=2)


def test_demo_layout_and_determinism(demo, tmp_path):
    records = oasis_kaggle_records(demo)
    assert len(records) == 24 and sorted({r["label"] for r in records}) == [0, 1, 2, 3]
    assert len({r["subject"] for r in records}) == 12
    from PIL import Image

    image = Image.open(records[0]["image"])
    assert image.size == (496, 248) and image.mode == "RGB"
    again = build_oasis_demo(tmp_path / "again", subjects_per_class=(3, 3, 3, 3), slices_per_subject=2)
    digest = lambda p: hashlib.md5(Path(p).read_bytes()).hexdigest()
    assert digest(records[5]["image"]) == digest(oasis_kaggle_records(again)[5]["image"])


def test_demo_classes_differ_by_atrophy(demo):
    # simulated atrophy enlarges the dark CSF spaces: classes 2-3 have more dark pixels inside the head
    transform = slice_transforms(64)
    dark = {c: [] for c in range(4)}
    for r in oasis_kaggle_records(demo):
        x = transform(r)["image"][0]
        head = x > 0.05
        dark[r["label"]].append(((x < 0.35) & head).sum().item() / head.sum().item())
    means = [np.mean(dark[c]) for c in range(4)]
    assert means[3] > means[0] and means[2] > means[0], means


def test_slice_transforms_geometry(demo):
    record = oasis_kaggle_records(demo)[0]
    out = slice_transforms((32, 48))(record)["image"]
    assert out.shape == (1, 32, 48) and out.dtype == torch.float32
    aug = slice_transforms(32, augment=True, clean_key="image_clean")(record)
    assert aug["image"].shape == aug["image_clean"].shape == (1, 32, 32)
    assert 0 <= aug["image"].min() and aug["image"].max() <= 1


def test_volume_transforms(tmp_path):
    vol = np.zeros((30, 40, 24), dtype=np.float32)
    vol[5:25, 5:35, 4:20] = np.random.default_rng(0).uniform(10, 100, size=(20, 30, 16))
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.2, 1.0, 1.5, 1.0])), str(path))
    out = volume_transforms(16, pixdim=2.0)({"image": str(path)})["image"]
    assert out.shape == (1, 16, 16, 16) and 0 <= out.min() and out.max() <= 1

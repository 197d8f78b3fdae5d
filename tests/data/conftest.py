from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def write_slice(path, value: int = 200, shape=(62, 124), seed: int = 0) -> None:
    """A small RGB JPEG with an ellipse 'head' of brightness ``value`` on black, like the Kaggle slices."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    head = ((rows - shape[0] / 2) / (shape[0] / 2.5)) ** 2 + ((cols - shape[1] / 2) / (shape[0] / 2.5)) ** 2 < 1
    image = (head * value * rng.uniform(0.8, 1.0, size=shape)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).convert("RGB").save(path, quality=95)


@pytest.fixture
def kaggle_dir(tmp_path):
    """A tiny Kaggle OASIS folder: 4 classes, 12 subjects, 3 slices each (two class-name spellings)."""
    root = tmp_path / "oasis" / "Data"
    folders = ["Non Demented", "Very_Mild_Demented", "Mild Dementia", "Moderate Dementia"]
    subject = 0
    for label, folder in enumerate(folders):
        for _ in range(3):
            subject += 1
            for s in (100, 101, 102):
                write_slice(root / folder / f"OAS1_{subject:04d}_MR1_mpr-1_{s}.jpg", value=120 + 30 * label,
                            seed=subject * 1000 + s)
    return tmp_path / "oasis"

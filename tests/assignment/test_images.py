from __future__ import annotations

import pytest
import torch

from monai_neurosql.assignment import collect_images
from tests.helpers import indexed_dataset, shapes


def test_collect_images_sorts_and_checks():
    images, _ = shapes(10, size=16, seed=0)
    ds = indexed_dataset(images)
    loader = [ds[i] for i in [3, 1, 2, 0, 4, 5, 6, 7, 8, 9]]
    batches = [{"image": torch.stack([d["image"] for d in loader[i : i + 4]]),
                "index": torch.tensor([d["index"] for d in loader[i : i + 4]])} for i in range(0, 10, 4)]
    got, rows = collect_images(batches, 10)
    assert rows.tolist() == list(range(10)) and torch.equal(got, images)
    with pytest.raises(ValueError, match="exactly once"):
        collect_images(batches[:1], 10)

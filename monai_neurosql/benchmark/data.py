"""The benchmark's data: training, validation (unseen) and test (reference) images as tensors, for any data set."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import read_cache, write_cache

__all__ = ["DEMO_SUBJECTS", "dataset_name", "load_benchmark_data"]

#: Subjects per class of the embedded demo at ``demo_scale=1`` (Non Demented, Very mild, Mild, Moderate).
DEMO_SUBJECTS = (16, 10, 8, 6)

logger = logging.getLogger(__name__)

#: what :func:`load_benchmark_data` keeps in its tensor cache; bump when loading changes in a way the key cannot see
_CACHE_FORMAT = 1
_CACHED = ("train_images", "train_labels", "unseen_images", "unseen_labels", "reference_images", "reference_labels")


def dataset_name(dataset: str) -> str:
    """A short, file-name-safe name for a ``--dataset`` value (``fashion-mnist``, ``demo``, or a path's stem).

    Every output path is built from this name under ``--output``, never from the dataset path itself.
    """
    name = dataset if dataset in ("fashion-mnist", "demo") else Path(str(dataset).rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dataset"


def _tensors(records: Sequence[dict], transform) -> tuple[torch.Tensor, torch.Tensor]:
    from monai.data import Dataset

    ds = Dataset(list(records), transform)
    items = [ds[i] for i in range(len(ds))]
    if not items:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    images = torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items]).float()
    return images, torch.tensor([int(it["label"]) for it in items])


def _draw(records: Sequence[Any], cap: int, seed: int = 0) -> list[Any]:
    """At most ``cap`` of ``records``: all of them, or a seeded random draw kept in file order.

    Not the first ``cap``: MedMNIST-layout files and slice folders are often sorted by class or subject, and their
    head holds only the first classes (the demo brains' first 2000 of 4096 training slices are two of its four
    classes). The draw is the same in every run (seed 0), so every model and seed trains on the same images.
    """
    if len(records) <= cap:
        return list(records)
    keep = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))[:cap].sort().values
    return [records[int(i)] for i in keep]


def _cache_key(parts: Sequence[Sequence[dict]], settings: tuple) -> str:
    """A digest of what the loaded tensors depend on: the drawn records of each split (in-memory arrays by their
    bytes, image files by path, size and modification time, every other field by value), ``settings`` (image size,
    spatial dims), the transforms' source file and MONAI's version."""
    import monai

    from ..data import transforms

    digest = hashlib.sha256(repr((_CACHE_FORMAT, settings, monai.__version__)).encode())
    digest.update(Path(transforms.__file__).read_bytes())
    for records in parts:
        digest.update(b"|split|")
        for record in records:
            for key in sorted(record):
                value = record[key]
                digest.update(repr(key).encode())
                if isinstance(value, np.ndarray):
                    digest.update(repr((value.shape, value.dtype.str)).encode())
                    digest.update(np.ascontiguousarray(value).tobytes())
                elif isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
                    stat = os.stat(value)
                    digest.update(repr((os.fspath(value), stat.st_size, stat.st_mtime_ns)).encode())
                else:
                    digest.update(repr(value).encode())
    return digest.hexdigest()[:20]


def load_benchmark_data(
    dataset: str,
    image_size: int | None,
    max_train: int,
    work_dir: str | Path,
    max_reference: int = 4096,
    csv_path: str | None = None,
    demo_scale: int = 1,
    spatial_dims: int = 2,
) -> dict[str, Any]:
    """Training images/labels (at most ``max_train``, drawn at random), the validation split (``unseen``: real
    images no model trains on, for the floor control, model selection and early stopping) and the test split
    (``reference``: what every image set is scored against), as ``N x C x [SPATIAL]`` float tensors in ``[0, 1]``.

    Args:
        dataset: ``"fashion-mnist"`` (Debian's dataset-fashion-mnist, repacked to the MedMNIST layout; its
            validation split is the last 5000 training images), ``"demo"`` (the embedded MNI152-based brain
            slices), a MedMNIST-layout ``.npz``, or an OASIS folder (the Kaggle slice release, or OASIS-1
            volumes with ``csv_path``).
        image_size: resize (default: native for ``.npz``, 64 for OASIS and the demo).
        max_train: cap on training images (a seeded random draw of that many when the split holds more, the same
            in every run; not the first ones, which in a class-sorted file are the first classes).
        work_dir: where repacked files, the demo and OASIS slice caches are written (under ``--output``), and
            ``tensor_cache/``: the transformed images, reused by every later load of the same records and settings
            (the benchmark loads the data in each of its child processes; an image file changed on disk, another
            draw, size or transforms code gives another key).
        max_reference: cap on test and validation images (drawn the same way).
        csv_path: the OASIS cross-sectional CSV (volume folders).
        demo_scale: the demo's subjects per class are ``demo_scale * DEMO_SUBJECTS`` (1: 40 subjects, 320
            slices; 8: 320 subjects, 2560 slices, enough held-out slices for every metric's minimum).
        spatial_dims: 2, or 3 for OASIS-1 volumes and 3D MedMNIST.

    Raises:
        ValueError: ``demo_scale < 1``; FileNotFoundError: a missing file or folder (named).

    Returns:
        ``{"name", "train_images", "train_labels", "unseen_images", "unseen_labels", "reference_images",
        "reference_labels", "num_classes", "class_mix_shift"}`` (the last: :func:`class_mix_shift`'s sentence, also
        logged as a warning, or ``""``).
    """
    from ..data import (
        array_transforms,
        build_oasis_demo,
        fashion_mnist_to_npz,
        medmnist_records,
        prepare_oasis_split,
        slice_transforms,
        volume_transforms,
    )

    work_dir = Path(work_dir)
    if demo_scale < 1:
        raise ValueError(f"demo_scale must be a positive integer, got {demo_scale}.")
    if dataset == "fashion-mnist" or str(dataset).endswith(".npz"):
        if dataset != "fashion-mnist" and not Path(dataset).is_file():
            raise FileNotFoundError(f"--dataset {dataset!r} does not exist; pass a MedMNIST-layout .npz file.")
        path = fashion_mnist_to_npz(work_dir / "fashionmnist_medmnist.npz") if dataset == "fashion-mnist" else dataset
        split = medmnist_records(path)
        spatial_dims = split["training"][0]["image"].ndim - 1
        transform = array_transforms(image_size, spatial_dims=spatial_dims)
    else:
        root = None
        if dataset == "demo":
            counts = tuple(demo_scale * c for c in DEMO_SUBJECTS)
            root = build_oasis_demo(work_dir / f"demo_data_x{demo_scale}", subjects_per_class=counts)
        elif not Path(dataset).is_dir():
            raise FileNotFoundError(f"--dataset {dataset!r} is neither 'fashion-mnist', 'demo', an .npz file nor a "
                                    "folder; pass an OASIS folder (Kaggle slices, or OASIS-1 volumes with --csv-path).")
        split = prepare_oasis_split(root or dataset, work_dir / f"data_{dataset_name(dataset)}", csv_path=csv_path,
                                    seed=0, spatial_dims=spatial_dims)
        transform = (slice_transforms(image_size or 64) if spatial_dims == 2
                     else volume_transforms(image_size or 64))
    parts = {"train": _draw(split["training"], max_train), "unseen": _draw(split["validation"], max_reference),
             "reference": _draw(split["test"], max_reference)}
    key = _cache_key(list(parts.values()), (image_size, spatial_dims))
    cache = work_dir / "tensor_cache" / f"{dataset_name(dataset)}_{key}.pt"
    tensors = read_cache(cache, _CACHED, logger, f"images loaded from {cache} (transformed once; the key changes "
                         "with the files)", "loading the images again")
    if tensors is None:
        tensors = {}
        for part, records in parts.items():
            tensors[f"{part}_images"], tensors[f"{part}_labels"] = _tensors(records, transform)
        write_cache(cache, tensors)
    labels = [tensors[f"{part}_labels"] for part in parts if len(tensors[f"{part}_labels"])]
    shift = class_mix_shift(tensors["train_labels"], tensors["reference_labels"])
    if shift:
        logger.warning(f"{dataset}: {shift}")
    return {
        "name": dataset_name(dataset), **tensors,
        "num_classes": int(max(int(t.max()) for t in labels)) + 1,
        "class_mix_shift": shift,
    }


def class_mix_shift(train_labels: torch.Tensor, reference_labels: torch.Tensor, tolerance: float = 0.1) -> str:
    """A sentence when the training images' class mix differs from the reference (test) split's, else ``""``.

    Every metric compares generated images with the reference split, so a model trained on another class mix is
    scored against classes it never saw; the ``real_train`` control then scores far from the ``real_unseen`` floor.
    Flagged when the total variation distance between the two class shares exceeds ``tolerance``, or a class that
    holds at least 2% of the reference images is absent from training.
    """
    if not len(train_labels) or not len(reference_labels):
        return ""
    size = int(max(int(train_labels.max()), int(reference_labels.max()))) + 1
    train = torch.bincount(train_labels.long().flatten(), minlength=size).double()
    reference = torch.bincount(reference_labels.long().flatten(), minlength=size).double()
    train, reference = train / train.sum(), reference / reference.sum()
    distance = 0.5 * float((train - reference).abs().sum())
    missing = [c for c in range(size) if train[c] == 0 and reference[c] >= 0.02]
    if distance <= tolerance and not missing:
        return ""
    shares = ", ".join(f"class {c}: {train[c]:.0%} of training vs {reference[c]:.0%} of test" for c in range(size))
    return (f"the training images' class mix differs from the test split's (total variation {distance:.2f}; "
            f"{shares}){'; classes never trained on: ' + str(missing) if missing else ''}. Every metric scores "
            "against the test split, so check the split or the --max-train cap.")


def export_medmnist_npz(data: dict[str, Any], path: str | Path) -> Path:
    """Write loaded benchmark data in the MedMNIST ``.npz`` key layout (``train_images``/``train_labels``,
    ``val_*``, ``test_*``; uint8 images, channel last for RGB), e.g. the demo brain slices as a MedMNIST-layout
    set for the benchmark's ``.npz`` path."""
    def images(x: torch.Tensor) -> np.ndarray:
        arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return np.moveaxis(arr, 1, -1) if arr.shape[1] == 3 else arr[:, 0]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, train_images=images(data["train_images"]),
                        train_labels=data["train_labels"].numpy()[:, None],
                        val_images=images(data["unseen_images"]), val_labels=data["unseen_labels"].numpy()[:, None],
                        test_images=images(data["reference_images"]),
                        test_labels=data["reference_labels"].numpy()[:, None])
    return path


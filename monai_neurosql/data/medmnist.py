"""MedMNIST in its ``.npz`` release format (2D and 3D), read directly; Fashion-MNIST repacked into it.

Length: one file format (read, check with the file named, scale by dtype rule, records, Fashion-MNIST
repacking, download); splitting the checks from the reader would separate each rule from the code it guards.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from ..extras import require
from ..utils import atomic_write

__all__ = [
    "FASHION_MNIST_DIR",
    "download_medmnist",
    "fashion_mnist_to_npz",
    "intensity_rule",
    "load_medmnist_npz",
    "medmnist_records",
    "read_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_SPLITS = {"training": "train", "validation": "val", "test": "test"}

logger = logging.getLogger(__name__)


def _array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(
            f"{str(path)!r}, key {key!r}: holds Python objects (dtype=object; {err}), which are not read for safety; "
            "save it as one numeric array, e.g. np.savez(..., {key}=np.stack(images).astype(np.uint8))."
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged member of the zip archive, reported with the file and key
        raise ValueError(f"{str(path)!r}, key {key!r}: cannot be read ({type(err).__name__}: {err}); re-download or "
                         "re-save the file.") from None


def _layout(images: np.ndarray, spatial_dims: int | None) -> int | None:
    """2 or 3 spatial dimensions of an ``(N, spatial..., [C])`` array (channels last, 1 or 3), ``None`` if neither."""
    channels_last = images.shape[-1] in (1, 3)
    if images.ndim == 3:
        return 2
    if images.ndim == 4:
        if spatial_dims == 3:
            return 3
        return 2 if channels_last else 3
    if images.ndim == 5 and channels_last:
        return 3
    return None


def load_medmnist_npz(path: str | os.PathLike, spatial_dims: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST ``.npz``: ``{"train"|"val"|"test": (images, labels)}``, checked.

    Images are ``(N, H, W)`` or ``(N, H, W, C)`` for 2D sets and ``(N, D, H, W)`` or ``(N, D, H, W, C)`` for 3D
    sets, ``C`` 1 or 3 (RGB) channels last as in the release; labels ``(N,)`` or ``(N, K)`` integers (multi-label
    sets keep their ``K`` columns). Any numeric image dtype is accepted here; :func:`medmnist_records` scales it.

    Args:
        path: the ``.npz`` file.
        spatial_dims: 2 or 3 to check the image rank against; ``None`` accepts both (a 4D array with a last axis
            of 1 or 3 is read as 2D with channels).

    Raises:
        FileNotFoundError: missing file (or a folder). ValueError: not an npz, missing keys, object arrays,
            wrong shapes or dtypes, mismatched counts, empty splits, non-integer or negative labels. Every message
            names the file and the key.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"MedMNIST file {str(path)!r} {what}; pass the path of a .npz release file.")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - zipfile / pickle errors: the message must name the file
        raise ValueError(f"cannot read {str(path)!r} as a MedMNIST .npz ({type(err).__name__}: {err}); re-download "
                         "it or save it with np.savez.") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(  # noqa: TRY004 - a file with the wrong content: a value error, as for the other bad filesf"{str(path)!r} holds one array, not the MedMNIST keys; save it with np.savez(path, "
                         "train_images=..., train_labels=..., val_images=..., ...).")
    with archive:
        required = [f"{s}_{k}" for s in _SPLITS.values() for k in ("images", "labels")]
        missing = [k for k in required if k not in archive.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} is missing the MedMNIST keys {missing} (found {sorted(archive.files)}); the release "
                "format has train_images, train_labels, val_images, val_labels, test_images, test_labels."
            )
        out = {}
        for split in _SPLITS.values():
            key, label_key = f"{split}_images", f"{split}_labels"
            images, labels = _array(archive, key, path), _array(archive, label_key, path)
            dims = _layout(images, spatial_dims)
            if dims is None or (spatial_dims is not None and dims != spatial_dims):
                want = {2: "(N, H, W) or (N, H, W, C)", 3: "(N, D, H, W) or (N, D, H, W, C)",
                        None: "(N, H, W[, C]) or (N, D, H, W[, C]) with C = 1 or 3"}
                raise ValueError(f"{str(path)!r}, key {key!r}: shape {images.shape}; expected {want[spatial_dims]}.")
            if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_) \
                    or np.issubdtype(images.dtype, np.complexfloating):
                raise ValueError(f"{str(path)!r}, key {key!r}: dtype {images.dtype} is not an image type; use uint8 "
                                 "(0-255), float in [0, 1], or another integer or float type (scaled per file).")
            if images.shape[0] == 0:
                raise ValueError(f"{str(path)!r}, key {key!r} is empty; every split needs images.")
            if labels.shape[0] != images.shape[0]:
                raise ValueError(f"{str(path)!r}, key {label_key!r}: {labels.shape[0]} rows for "
                                 f"{images.shape[0]} images in {key!r}.")
            _check_labels(labels, path, label_key)
            out[split] = (images, labels)
    return out


def _check_labels(labels: np.ndarray, path: Path, key: str, num_classes: int | None = None) -> None:
    if labels.dtype == np.bool_:
        return
    if not np.issubdtype(labels.dtype, np.number) or np.issubdtype(labels.dtype, np.complexfloating):
        raise ValueError(f"{str(path)!r}, key {key!r}: labels have dtype {labels.dtype}; use integer class indices.")
    if labels.size and (not np.isfinite(labels).all() or not np.equal(np.mod(labels, 1), 0).all()):
        raise ValueError(f"{str(path)!r}, key {key!r}: labels must be whole numbers (class indices 0..K-1).")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0:
        raise ValueError(f"{str(path)!r}, key {key!r}: label {low} is negative; classes are numbered 0..K-1 (remove "
                         "or relabel the images of unknown class).")
    if num_classes is not None and high >= num_classes:
        raise ValueError(f"{str(path)!r}, key {key!r}: label {high} is out of range for num_classes={num_classes} "
                         f"(classes 0..{num_classes - 1}); set num_classes to {high + 1} or fix the labels.")


def intensity_rule(images: np.ndarray, others: tuple[np.ndarray, ...] = ()) -> tuple[str, float, float]:
    """How an image array of a MedMNIST-layout file becomes float in ``[0, 1]``: ``(rule, low, high)``.

    The rules, in order (``others`` are the file's other splits, which share one rule):

    - ``uint8``: ``x / 255`` (the MedMNIST format).
    - ``bool``: ``False -> 0``, ``True -> 1``.
    - float with every value in ``[0, 1]``: as is.
    - integers whose values all lie in ``[0, 255]`` (8-bit images saved in a wider type): ``x / 255``.
    - any other integer or float array (e.g. ``int16`` CT numbers, MRI intensities): one min-max map per file,
      ``(x - min) / (max - min)`` with the minimum and maximum over all splits, so relative intensities between
      images are kept.

    Raises:
        ValueError: NaN or infinite values, or a file whose images are all one value.
    """
    arrays = (images, *others)
    if images.dtype == np.bool_:
        return "bool as 0/1", 0.0, 1.0
    if np.issubdtype(images.dtype, np.floating) and not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("holds NaN or infinite values")
    low = float(min(a.min() for a in arrays))
    high = float(max(a.max() for a in arrays))
    if high <= low:
        raise ValueError(f"every image has the value {low:g}")
    if images.dtype == np.uint8:
        return "uint8 / 255", 0.0, 255.0
    if np.issubdtype(images.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return "float in [0, 1] as is", 0.0, 1.0
    if np.issubdtype(images.dtype, np.integer) and low >= 0 and high <= 255:
        return f"{images.dtype} in [0, 255] / 255", 0.0, 255.0
    return f"{images.dtype} min-max over the file [{low:g}, {high:g}]", low, high


def medmnist_records(
    path: str | os.PathLike, spatial_dims: int | None = None, num_classes: int | None = None
) -> dict[str, list[dict]]:
    """MedMNIST splits as records with channel-first arrays, ready for :func:`array_transforms`.

    Intensities follow :func:`intensity_rule` (the rule is logged): ``uint8`` arrays stay ``uint8`` (scaled by
    :func:`array_transforms`), others become ``float32`` in ``[0, 1]`` here.

    Args:
        path: the ``.npz`` file.
        spatial_dims: 2 or 3 to check the file against.
        num_classes: when given, labels must lie in ``0..num_classes-1``.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``; each record has ``image`` (``(C, H, W)`` or
        ``(C, D, H, W)``), ``label`` (int, the first label column), ``index`` (position in its split), ``subject``
        (MedMNIST has no subject IDs: one per image) and ``record_index``.

    Raises:
        ValueError: as :func:`load_medmnist_npz`, plus labels out of range and images that cannot be scaled; the
            message names the file and the key and says what to change.
    """
    path = Path(path).expanduser()
    data = load_medmnist_npz(path, spatial_dims)
    names = list(_SPLITS.items())
    all_images = [data[key][0] for _, key in names]
    if len({a.dtype for a in all_images}) > 1:
        raise ValueError(f"{str(path)!r}: the image keys have different dtypes "
                         f"({ {f'{k}_images': str(a.dtype) for (_, k), a in zip(names, all_images)} }); save them with "
                         "one dtype.")
    try:
        rule, low, high = intensity_rule(all_images[0], tuple(all_images[1:]))
    except ValueError as err:
        raise ValueError(f"{str(path)!r}, keys train/val/test_images: {err}; fix or remove those images.") from None
    if rule != "uint8 / 255":
        logger.info(f"{path}: images are {all_images[0].dtype}; scaled to [0, 1] by the rule '{rule}'")
    split: dict[str, list[dict]] = {}
    offset = 0
    for (name, key), images in zip(names, all_images):
        labels = data[key][1]
        _check_labels(labels, path, f"{key}_labels", num_classes)
        labels = labels.reshape(labels.shape[0], -1)
        dims = _layout(images, spatial_dims)
        if images.ndim == dims + 2:  # channels last -> channels first
            images = np.moveaxis(images, -1, 1)
        else:
            images = images[:, None]
        if rule != "uint8 / 255":
            images = ((images.astype(np.float64) - low) / (high - low)).astype(np.float32)
        split[name] = [
            {"image": images[i], "label": int(labels[i, 0]), "index": i, "subject": f"{key}-{i}",
             "record_index": offset + i}
            for i in range(images.shape[0])
        ]
        offset += images.shape[0]
    return split


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an (optionally gzipped) idx file of the MNIST family as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an idx file.")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_to_npz(
    out_path: str | os.PathLike,
    source_dir: str | os.PathLike = FASHION_MNIST_DIR,
    num_val: int = 5000,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Path:
    """Repack Fashion-MNIST (idx files, e.g. Debian's ``dataset-fashion-mnist``) into the MedMNIST key layout.

    The last ``num_val`` training images become ``val``; ``max_train``/``max_test`` cap the splits (the paper
    caps training sets at 2000). Written once; an existing file is returned as is.

    Raises:
        FileNotFoundError: the idx files are not in ``source_dir`` (``apt-get install dataset-fashion-mnist``).
    """
    out = Path(out_path).expanduser()
    if out.is_file():
        return out
    src = Path(source_dir)
    names = {
        "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"the Fashion-MNIST idx files {missing} are not in {str(src)!r} (Debian's "
                                f"dataset-fashion-mnist package installs them in {FASHION_MNIST_DIR}: apt-get install "
                                "dataset-fashion-mnist).")
    arrays = {k: read_idx(src / v) for k, v in names.items()}
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    val_x, val_y = train_x[-num_val:], train_y[-num_val:]
    train_x, train_y = train_x[:-num_val][:max_train], train_y[:-num_val][:max_train]
    test_x, test_y = arrays["test_images"][:max_test], arrays["test_labels"][:max_test]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        np.savez_compressed(tmp, train_images=train_x, train_labels=train_y[:, None], val_images=val_x,
                            val_labels=val_y[:, None], test_images=test_x, test_labels=test_y[:, None])
    return out


def download_medmnist(name: str, size: int = 28, root: str | os.PathLike = "~/.medmnist") -> Path:
    """Download a MedMNIST set by name and size with the ``medmnist`` package (needs it and internet).

    Returns:
        Path of the ``.npz`` file (``<root>/<name>[_<size>].npz``).

    Raises:
        ImportError: ``medmnist`` is not installed (``pip install "monai-neurosql[medmnist]"``).
        RuntimeError: the download failed (no internet): download the ``.npz`` elsewhere and pass its path.
    """
    medmnist = require("medmnist", "medmnist", "Downloading MedMNIST sets by name (or pass a downloaded .npz file)")
    info = medmnist.INFO.get(name.lower())
    if info is None:
        raise ValueError(f"unknown MedMNIST set {name!r}; known sets: {sorted(medmnist.INFO)}.")
    root_path = Path(root).expanduser()
    root_path.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, info["python_class"])
    try:
        cls(split="train", download=True, root=str(root_path), size=size)
    except Exception as err:
        raise RuntimeError(f"downloading MedMNIST {name} ({size}px) failed ({err}); without internet, download the "
                           f".npz elsewhere and pass its path.") from err
    suffix = "" if size == 28 else f"_{size}"
    return root_path / f"{name.lower()}{suffix}.npz"

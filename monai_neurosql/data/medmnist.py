"""MedMNIST in its ``.npz`` release format (2D and 3D), read directly; Fashion-MNIST repacked into it."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "download_medmnist",
    "fashion_mnist_to_npz",
    "load_medmnist_npz",
    "medmnist_records",
    "read_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_SPLITS = {"training": "train", "validation": "val", "test": "test"}


def load_medmnist_npz(path: str | os.PathLike, spatial_dims: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST ``.npz``: ``{"train"|"val"|"test": (images, labels)}``.

    Images are ``(N, H, W)`` or ``(N, H, W, 3)`` for 2D sets and ``(N, D, H, W)`` for 3D sets (sizes 28, 64, 128,
    224), 8-bit; labels ``(N,)`` or ``(N, 1)`` (multi-label sets ``(N, K)`` are kept as they are).

    Args:
        path: the ``.npz`` file.
        spatial_dims: 2 or 3 to check the image rank against; ``None`` accepts both (a 4D array with a last
            axis of 3 is read as 2D RGB).

    Raises:
        FileNotFoundError: missing file. ValueError: missing keys, wrong shapes, mismatched counts.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {str(path)!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile / pickle errors: the message must name the file
        raise ValueError(f"cannot read {str(path)!r} as a MedMNIST .npz ({type(err).__name__}: {err}).") from err
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
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            rank = images.ndim - 1
            is_rgb = images.ndim == 4 and images.shape[-1] == 3
            dims = 2 if rank == 2 or is_rgb else 3 if rank == 3 else None
            if dims is None or (spatial_dims is not None and dims != spatial_dims):
                want = {2: "(N, H, W) or (N, H, W, 3)", 3: "(N, D, H, W)", None: "(N, H, W[, 3]) or (N, D, H, W)"}
                raise ValueError(f"{str(path)!r}: {split}_images has shape {images.shape}; expected "
                                 f"{want[spatial_dims]}.")
            if labels.shape[0] != images.shape[0]:
                raise ValueError(f"{str(path)!r}: {split}_labels has {labels.shape[0]} rows for "
                                 f"{images.shape[0]} images.")
            if images.shape[0] == 0:
                raise ValueError(f"{str(path)!r}: {split}_images is empty.")
            out[split] = (images, labels)
    return out


def medmnist_records(path: str | os.PathLike, spatial_dims: int | None = None) -> dict[str, list[dict]]:
    """MedMNIST splits as records with in-memory channel-first arrays, ready for :func:`array_transforms`.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``; each record has ``image`` (uint8,
        ``(C, H, W)`` or ``(1, D, H, W)``), ``label`` (int, the first label column), ``index`` (position in its
        split), ``subject`` (MedMNIST has no subject IDs: one per image) and ``record_index``.
    """
    data = load_medmnist_npz(path, spatial_dims)
    split: dict[str, list[dict]] = {}
    offset = 0
    for name, key in _SPLITS.items():
        images, labels = data[key]
        labels = labels.reshape(labels.shape[0], -1)
        if images.ndim == 4 and images.shape[-1] == 3:
            images = np.moveaxis(images, -1, 1)
        else:
            images = images[:, None]
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
        FileNotFoundError: the idx files are missing (``apt-get install dataset-fashion-mnist``).
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
        raise FileNotFoundError(f"Fashion-MNIST idx files {missing} not found in {str(src)!r}; install them with "
                                "'apt-get install dataset-fashion-mnist' or pass source_dir.")
    arrays = {k: read_idx(src / v) for k, v in names.items()}
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    val_x, val_y = train_x[-num_val:], train_y[-num_val:]
    train_x, train_y = train_x[:-num_val][:max_train], train_y[:-num_val][:max_train]
    test_x, test_y = arrays["test_images"][:max_test], arrays["test_labels"][:max_test]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, train_images=train_x, train_labels=train_y[:, None], val_images=val_x,
                        val_labels=val_y[:, None], test_images=test_x, test_labels=test_y[:, None])
    os.replace(tmp, out)
    return out


def download_medmnist(name: str, size: int = 28, root: str | os.PathLike = "~/.medmnist") -> Path:
    """Download a MedMNIST set by name and size with the ``medmnist`` package (needs it and internet).

    Returns:
        Path of the ``.npz`` file (``<root>/<name>[_<size>].npz``).

    Raises:
        ImportError: ``medmnist`` is not installed (``pip install medmnist``).
        RuntimeError: the download failed (no internet): download the ``.npz`` elsewhere and pass its path.
    """
    try:
        import medmnist
    except ImportError as err:
        raise ImportError("downloading MedMNIST needs the 'medmnist' package: pip install medmnist "
                          "(or pass the path of a downloaded .npz file).") from err
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

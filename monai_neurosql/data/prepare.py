"""One-call data preparation for the bundles: records, subject-stratified split, datalist JSON, data info."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .checks import check_image_files
from .demo import build_oasis_demo
from .medmnist import FASHION_MNIST_DIR, download_medmnist, fashion_mnist_to_npz, medmnist_records
from .oasis import check_folder, oasis_kaggle_records, oasis_volume_records, slice_volume_records
from .splits import subject_stratified_split, write_datalist

__all__ = ["image_spacing", "prepare_medmnist_split", "prepare_oasis_split", "read_data_info", "write_data_info"]

logger = logging.getLogger(__name__)


class _RankZeroFirst:
    """Under ``torch.distributed``, rank 0 runs the block first (writing files) while the other ranks wait, then
    they run it (reading what rank 0 wrote); a no-op in a single process."""

    def __enter__(self) -> bool:
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        if self.distributed and self.rank != 0:
            dist.barrier()
        return self.rank == 0

    def __exit__(self, *exc) -> None:
        if self.distributed and self.rank == 0:
            dist.barrier()
_SESSION_DIR = re.compile(r"^OAS\d_\d{4}_MR\d+$", re.IGNORECASE)


def _detect_layout(root: Path) -> str:
    for path in root.rglob("*"):
        if path.is_dir() and _SESSION_DIR.match(path.name):
            return "volumes"
    return "kaggle"


def prepare_oasis_split(
    dataset_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    layout: str = "auto",
    csv_path: str | os.PathLike | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    demo_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    axial_range: tuple[float, float] = (0.3, 0.7),
    min_subjects: int = 1,
) -> dict[str, list[dict]]:
    """Records of an OASIS folder (or of the embedded demo), split by subject and written as ``datalist.json``.

    Every image file is decoded once first (:func:`check_image_files`): unreadable files stop here with their
    names, blank ones are skipped with a warning (the verdicts are kept in ``<output_dir>/image_checks.json``, so a
    later run decodes only the files that changed); the split sizes are checked (``min_subjects`` per split) before
    any dataset is cached or any epoch runs.

    Args:
        dataset_dir: the Kaggle slice folder or the OASIS-1 volume folder; ``None`` or ``""`` builds and uses the
            embedded demo (:func:`build_oasis_demo`) under ``demo_dir``.
        output_dir: where ``datalist.json`` (and, for 2D from volumes, the slice cache) is written.
        layout: ``"kaggle"``, ``"volumes"`` or ``"auto"`` (volumes when ``OAS1_xxxx_MRy`` folders exist).
        csv_path: the OASIS cross-sectional CSV (volumes only).
        fractions: subject fractions of training/validation/test.
        seed: split seed.
        demo_dir: demo location; default ``<output_dir>/demo_data``.
        spatial_dims: 2 (slices) or 3 (whole volumes; volumes layout only).
        axial_range: relative axial range of the slices cut from volumes.
        min_subjects: fewest subjects per split (:func:`subject_stratified_split`).

    Raises:
        FileNotFoundError: ``dataset_dir`` missing or a file. ValueError: unreadable images (named), unknown
            layout or class folders, or too few subjects for ``fractions`` (with fractions that would work).
    """
    with _RankZeroFirst() as writer:
        return _prepare_oasis_split(dataset_dir, output_dir, layout, csv_path, fractions, seed, demo_dir, spatial_dims,
                                    axial_range, min_subjects, writer)


def _prepare_oasis_split(dataset_dir, output_dir, layout, csv_path, fractions, seed, demo_dir, spatial_dims,
                         axial_range, min_subjects, writer: bool) -> dict[str, list[dict]]:
    out = Path(output_dir).expanduser()
    if dataset_dir in (None, ""):
        dataset_dir = build_oasis_demo(demo_dir or out / "demo_data")
        logger.info(f"no dataset_dir given: using the embedded demo set in {dataset_dir}")
        layout = "kaggle"
    root = check_folder(dataset_dir, "dataset_dir")
    if layout == "auto":
        layout = _detect_layout(root)
    if layout == "kaggle":
        if spatial_dims != 2:
            raise ValueError("the Kaggle OASIS release holds 2D slices; use spatial_dims=2 or the volume layout.")
        records = oasis_kaggle_records(root)
    elif layout == "volumes":
        if csv_path is None:
            raise ValueError("the OASIS volume layout needs csv_path (oasis_cross-sectional.csv) for the labels.")
        records = oasis_volume_records(root, csv_path)
        if spatial_dims == 2:
            records = slice_volume_records(records, out / "slices", axial_range=axial_range)
    else:
        raise ValueError(f"layout must be 'auto', 'kaggle' or 'volumes', got {layout!r}.")
    records = check_image_files(records, cache_file=out / "image_checks.json")
    split = subject_stratified_split(records, fractions=fractions, seed=seed, min_subjects=min_subjects)
    subjects = ", ".join(f"{len({r['subject'] for r in split[name]})}" for name in ("training", "validation", "test"))
    _log_split(split, f"of {subjects} subjects ({layout} layout, {root}), split by subject")
    if writer:
        write_datalist(split, out / "datalist.json", base_dir=root, seed=seed, fractions=list(fractions),
                       layout=layout)
    return split


def prepare_medmnist_split(
    npz_file: str | os.PathLike | None = None,
    name: str | None = None,
    size: int = 28,
    root: str | os.PathLike = "~/.medmnist",
    output_dir: str | os.PathLike | None = None,
    max_train: int | None = None,
    spatial_dims: int | None = None,
    num_classes: int | None = None,
    fashion_mnist_dir: str | os.PathLike = FASHION_MNIST_DIR,
) -> dict[str, list[dict]]:
    """MedMNIST splits (the release's own train/val/test) as records with in-memory arrays.

    The file is checked and scaled by :func:`medmnist_records` (dtype rules of :func:`intensity_rule`, labels
    against ``num_classes``, RGB or grey, 2D or 3D) before anything is cached or trained.

    Args:
        npz_file: a MedMNIST ``.npz``. When ``None``: ``name`` is downloaded with the ``medmnist`` package (needs
            internet), or, with no name either, Fashion-MNIST from ``fashion_mnist_dir`` is repacked into the
            MedMNIST format under ``output_dir``.
        name, size, root: MedMNIST set, image size and download folder.
        output_dir: where the repacked Fashion-MNIST file and ``datalist.json`` (counts only) go.
        max_train: cap on the training images (the paper caps at 2000).
        spatial_dims: 2 or 3 to check the file against.
        num_classes: labels must lie in ``0..num_classes-1`` (``None``: only non-negative).
        fashion_mnist_dir: the folder of the Fashion-MNIST idx files (``train-images-idx3-ubyte.gz``, ...) used when
            neither ``npz_file`` nor ``name`` is given. Default: where Debian's ``dataset-fashion-mnist`` puts them.

    Raises:
        FileNotFoundError, ValueError: see :func:`medmnist_records`; ``max_train < 1``; no ``npz_file`` or
            ``name`` and no Fashion-MNIST in ``fashion_mnist_dir`` (the message names the three settings).
    """
    if max_train is not None and int(max_train) < 1:
        raise ValueError(f"max_train must be at least 1 (or None for all training images), got {max_train}.")
    with _RankZeroFirst() as writer:
        return _prepare_medmnist_split(npz_file, name, size, root, output_dir, max_train, spatial_dims, num_classes,
                                       fashion_mnist_dir, writer)


def _prepare_medmnist_split(npz_file, name, size, root, output_dir, max_train, spatial_dims, num_classes,
                            fashion_mnist_dir, writer: bool) -> dict[str, list[dict]]:
    if npz_file in (None, ""):
        if name:
            npz_file = download_medmnist(name, size, root)
        else:
            target = Path(output_dir or ".").expanduser() / "fashionmnist_medmnist.npz"
            missing = None
            try:
                npz_file = fashion_mnist_to_npz(target, Path(fashion_mnist_dir).expanduser())
            except FileNotFoundError as err:
                missing = str(err)
            if missing is not None:  # raised here, outside the except: the bundle's last line shows this message
                raise FileNotFoundError(
                    f"npz_file and medmnist_name are empty, so the data is Fashion-MNIST from fashion_mnist_dir, but "
                    f"{missing} Point --fashion_mnist_dir at the folder of those files, or train on a MedMNIST file "
                    "with --npz_file <file.npz> (or --medmnist_name <set>, which downloads it and needs internet)."
                )
            logger.info(f"no npz_file or medmnist_name given: using Fashion-MNIST from {str(fashion_mnist_dir)!r}, "
                        f"repacked as {npz_file}")
    split = medmnist_records(npz_file, spatial_dims, num_classes=num_classes)
    if max_train is not None:
        split["training"] = split["training"][: int(max_train)]
    _log_split(split, f"from {npz_file}")
    if output_dir is not None and writer:
        write_datalist(split, Path(output_dir).expanduser() / "datalist.json", source=str(npz_file),
                       max_train=max_train)
    return split


def _log_split(split: dict[str, list[dict]], source: str) -> None:
    counts = ", ".join(f"{len(split.get(name, []))} {name}" for name in ("training", "validation", "test"))
    logger.info(f"data: {counts} images {source}")


def image_spacing(image: torch.Tensor) -> list[float]:
    """Pixel/voxel spacing of a (channel-first) image from its MetaTensor affine; 1.0 per axis without one."""
    spatial_dims = image.ndim - 1
    affine = getattr(image, "affine", None)
    if affine is None:
        return [1.0] * spatial_dims
    affine = torch.as_tensor(affine, dtype=torch.float64)
    return [float(v) for v in affine[:spatial_dims, :spatial_dims].pow(2).sum(0).sqrt()]


def write_data_info(path: str | os.PathLike, sample: dict | torch.Tensor, image_key: str = "image", **extra) -> Path:
    """Write ``data_info.json`` (spacing and shape of the training images, plus ``extra``) for inference."""
    image = sample[image_key] if isinstance(sample, dict) else sample
    info = {"spacing": image_spacing(image), "shape": list(image.shape), **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    return path


def read_data_info(path: str | os.PathLike) -> dict:
    """Read ``data_info.json``; a clear error when training has not written it yet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: run the bundle's train.json first (it writes the model "
                                "and data_info.json to the models folder).")
    return json.loads(path.read_text())

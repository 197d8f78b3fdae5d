"""Clinical-style MONAI transform chains for NeuroSQL: load, channel first, orientation/spacing (volumes),
percentile intensity scaling to [0, 1], foreground crop, resize and pad to the target size, optional mild
augmentation (never applied in the assignment pass)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    Compose,
    CopyItemsd,
    CropForegroundd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
)
from monai.utils import ensure_tuple_rep

__all__ = [
    "AsGrayscaled",
    "CheckFinited",
    "LoadImageCheckedd",
    "UnitIntensityd",
    "array_transforms",
    "slice_transforms",
    "volume_transforms",
]


def _source_name(data: Mapping, key: Hashable) -> str:
    value = data.get(key)
    meta = getattr(value, "meta", None)
    if isinstance(meta, Mapping) and "filename_or_obj" in meta:
        return str(meta["filename_or_obj"])
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        return str(value)
    subject = data.get("subject")
    return f"record {data.get('record_index', '?')} (subject {subject})" if subject else "an in-memory image"


class LoadImageCheckedd(MapTransform):
    """:class:`monai.transforms.LoadImaged` (channel first) whose errors name the file and the fix.

    A truncated JPEG or a corrupt NIfTI raises ``ValueError("cannot read image '<path>' ...")`` instead of a
    reader traceback, so users with 80k slices know which file to re-export or remove.
    """

    def __init__(self, keys: KeysCollection, reader: Any = None, row_major_2d: bool = False,
                 allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImaged(keys, reader=reader, image_only=True, ensure_channel_first=True,
                                 allow_missing_keys=allow_missing_keys, **kwargs)
        if row_major_2d:
            # JPEG/PNG arrays in numpy's (row, col) order, as MedMNIST arrays are; the last registered reader is
            # the first one tried for its suffixes, NIfTI still goes to nibabel
            self.loader.register(PILReader(reverse_indexing=False))

    def __call__(self, data: Mapping) -> dict:
        try:
            return self.loader(data)
        except Exception as err:  # readers raise many types; the message is what matters here
            names = [str(data[k]) for k in self.key_iterator(dict(data))]
            raise ValueError(
                f"cannot read image {', '.join(repr(n) for n in names)} ({type(err).__name__}: {err}). The file is "
                "unreadable, truncated or not an image: re-export or re-download it, or remove it from the dataset "
                "folder."
            ) from err


class CheckFinited(MapTransform):
    """Raise ``ValueError`` naming the source file when an image holds NaN or infinite values."""

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key]) if not isinstance(d[key], np.ndarray) else torch.from_numpy(d[key])
            if not bool(torch.isfinite(value).all()):
                raise ValueError(
                    f"image {_source_name(d, key)} contains NaN or infinite values; fix the file (e.g. replace NaNs "
                    "by 0) or remove it from the dataset."
                )
        return d


class UnitIntensityd(MapTransform):
    """In-memory arrays to ``float32`` in ``[0, 1]``: ``uint8`` divided by 255, ``bool`` as 0/1, float already in
    ``[0, 1]`` kept; anything else raises ``ValueError`` naming the record (scale such arrays first, e.g. with
    :func:`~monai_neurosql.data.medmnist_records`, which applies :func:`~monai_neurosql.data.intensity_rule`)."""

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = value if isinstance(value, (np.ndarray, torch.Tensor)) else np.asarray(value)
            dtype = str(array.dtype).replace("torch.", "")
            tensor = torch.as_tensor(array)
            if dtype == "uint8":
                d[key] = tensor.float() / 255.0
                continue
            if dtype == "bool":
                d[key] = tensor.float()
                continue
            if not tensor.is_floating_point():
                raise ValueError(f"image {_source_name(d, key)} has dtype {dtype}; expected uint8, bool or float in "
                                 "[0, 1] (scale other types first, e.g. with monai_neurosql.data.medmnist_records).")
            tensor = tensor.float()
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"image {_source_name(d, key)} contains NaN or infinite values; fix or remove it.")
            if tensor.numel() and (float(tensor.min()) < 0.0 or float(tensor.max()) > 1.0):
                raise ValueError(
                    f"image {_source_name(d, key)} is float with values in [{float(tensor.min()):g}, "
                    f"{float(tensor.max()):g}], outside [0, 1]; scale it first (medmnist_records applies one min-max "
                    "map per file)."
                )
            d[key] = tensor
        return d


class AsGrayscaled(MapTransform):
    """Channel-first RGB(A) to one luminance channel (ITU-R 601 weights); single-channel images pass through.

    The Kaggle OASIS slices are JPEGs saved as RGB with three equal channels.
    """

    _WEIGHTS = (0.299, 0.587, 0.114)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] in (3, 4):
                weights = torch.tensor(self._WEIGHTS, dtype=torch.float32).reshape(3, *([1] * (img.ndim - 1)))
                gray = (torch.as_tensor(img[:3]).float() * weights).sum(0, keepdim=True)
                d[key] = MetaTensor(gray, meta=img.meta) if isinstance(img, MetaTensor) else gray
        return d


def _foreground(x: torch.Tensor) -> torch.Tensor:
    # intensities are already in [0, 1]; 5% of the range separates tissue from background and JPEG noise
    return x > 0.05


def _intensity_and_geometry(keys: Sequence[str], spatial_size: Sequence[int], crop_foreground: bool,
                            lower: float, upper: float) -> list:
    size = max(spatial_size)
    chain: list = [ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)]
    if crop_foreground:
        chain.append(CropForegroundd(keys, source_key=keys[0], select_fn=_foreground, margin=1, allow_smaller=True))
    # keep the aspect ratio: longest side to the target, then pad the short side with background
    chain += [
        Resized(keys, spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd(keys, spatial_size=(size,) * len(spatial_size)),
    ]
    if len(set(spatial_size)) > 1:
        chain.append(Resized(keys, spatial_size=tuple(spatial_size), mode="area"))
    return chain


def _augmentation(keys: Sequence[str], spatial_dims: int, clean_key: str | None) -> list:
    chain: list = [CopyItemsd(keys[0], names=clean_key)] if clean_key else []
    rotate = 0.1 if spatial_dims == 2 else (0.1, 0.1, 0.1)
    chain += [
        RandAffined(keys, prob=0.5, rotate_range=rotate, scale_range=0.05, translate_range=2, padding_mode="zeros"),
        RandBiasFieldd(keys, prob=0.3, coeff_range=(0.0, 0.05)),
        RandGaussianNoised(keys, prob=0.3, std=0.01),
        ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    return chain


def _finish(chain: list, keys: list, spatial_dims: int, augment: bool, clean_key: str | None) -> Compose:
    if augment:
        chain += _augmentation(keys, spatial_dims, clean_key)
    chain.append(EnsureTyped(keys + ([clean_key] if augment and clean_key else []), dtype=torch.float32))
    return Compose(chain)


def slice_transforms(
    spatial_size: int | Sequence[int] = 64,
    augment: bool = False,
    keys: Sequence[str] = ("image",),
    lower: float = 0.5,
    upper: float = 99.5,
    crop_foreground: bool = True,
    clean_key: str | None = None,
) -> Compose:
    """2D slices from files (JPEG/PNG/NIfTI): load, grayscale, scale to ``[0, 1]``, crop, resize and pad.

    Args:
        spatial_size: target size (64 or 128 in the paper).
        augment: add mild random augmentation (small affine, bias field, noise); never for the assignment pass.
        keys: image keys.
        lower, upper: intensity percentiles mapped to 0 and 1 (clipped).
        crop_foreground: crop to the head before resizing.
        clean_key: with ``augment``, also keep the un-augmented image under this key (for mini-batch
            assignment, which must not see augmentation).
    """
    keys = list(keys)
    size = ensure_tuple_rep(spatial_size, 2)
    chain = [LoadImageCheckedd(keys, row_major_2d=True), AsGrayscaled(keys), CheckFinited(keys)]
    chain += _intensity_and_geometry(keys, size, crop_foreground, lower, upper)
    return _finish(chain, keys, 2, augment, clean_key)


def volume_transforms(
    spatial_size: int | Sequence[int] = 64,
    pixdim: float | Sequence[float] | None = None,
    augment: bool = False,
    keys: Sequence[str] = ("image",),
    lower: float = 0.5,
    upper: float = 99.5,
    crop_foreground: bool = True,
    clean_key: str | None = None,
) -> Compose:
    """3D volumes (NIfTI/Analyze): load, RAS orientation, optional resampling to ``pixdim`` mm, scale, crop, resize.

    Arguments as in :func:`slice_transforms`; ``pixdim`` resamples to that voxel spacing before cropping.
    """
    keys = list(keys)
    size = ensure_tuple_rep(spatial_size, 3)
    # labels given explicitly: RAS in the classic (L-R, P-A, I-S) sense, as MONAI did before its default changed
    chain: list = [LoadImageCheckedd(keys), CheckFinited(keys),
                   Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if pixdim is not None:
        chain.append(Spacingd(keys, pixdim=ensure_tuple_rep(pixdim, 3), mode="bilinear"))
    chain += _intensity_and_geometry(keys, size, crop_foreground, lower, upper)
    return _finish(chain, keys, 3, augment, clean_key)


def array_transforms(
    spatial_size: int | Sequence[int] | None = None,
    spatial_dims: int = 2,
    augment: bool = False,
    keys: Sequence[str] = ("image",),
    clean_key: str | None = None,
) -> Compose:
    """In-memory arrays (MedMNIST ``.npz`` records), already channel first: to ``[0, 1]`` by
    :class:`UnitIntensityd` (``uint8 / 255``, float in ``[0, 1]`` as is), then resize.

    Args:
        spatial_size: target size; ``None`` keeps the native size (28/64/128/224).
        spatial_dims: 2 or 3.
        augment, keys, clean_key: as in :func:`slice_transforms`.
    """
    keys = list(keys)
    chain: list = [UnitIntensityd(keys)]
    if spatial_size is not None:
        chain.append(Resized(keys, spatial_size=ensure_tuple_rep(spatial_size, spatial_dims), mode="area"))
    return _finish(chain, keys, spatial_dims, augment, clean_key)

from __future__ import annotations

from .demo import build_oasis_demo
from .loaders import assignment_loader, train_loader
from .medmnist import download_medmnist, fashion_mnist_to_npz, load_medmnist_npz, medmnist_records, read_idx
from .mixed_dataset import MixedDataset
from .prepare import image_spacing, prepare_medmnist_split, prepare_oasis_split, read_data_info, write_data_info
from .oasis import (
    OASIS_CLASSES,
    cdr_to_class,
    oasis_kaggle_records,
    oasis_volume_records,
    parse_oasis_filename,
    slice_volume_records,
)
from .splits import SPLIT_NAMES, read_datalist, subject_stratified_split, write_datalist
from .synthetic_dataset import SyntheticDataset, load_trained_generator
from .transforms import (
    AsGrayscaled,
    CheckFinited,
    LoadImageCheckedd,
    array_transforms,
    slice_transforms,
    volume_transforms,
)

__all__ = [
    "AsGrayscaled",
    "CheckFinited",
    "LoadImageCheckedd",
    "MixedDataset",
    "OASIS_CLASSES",
    "SPLIT_NAMES",
    "SyntheticDataset",
    "array_transforms",
    "assignment_loader",
    "build_oasis_demo",
    "cdr_to_class",
    "download_medmnist",
    "fashion_mnist_to_npz",
    "image_spacing",
    "load_medmnist_npz",
    "load_trained_generator",
    "medmnist_records",
    "oasis_kaggle_records",
    "oasis_volume_records",
    "parse_oasis_filename",
    "prepare_medmnist_split",
    "prepare_oasis_split",
    "read_data_info",
    "read_datalist",
    "read_idx",
    "slice_transforms",
    "slice_volume_records",
    "subject_stratified_split",
    "train_loader",
    "volume_transforms",
    "write_data_info",
    "write_datalist",
]

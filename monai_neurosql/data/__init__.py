from __future__ import annotations

from .checks import check_image_files, read_image_file
from .demo import build_oasis_demo
from .errors import summarize_errors_at_exit, user_error
from .loaders import assignment_loader, train_loader
from .medmnist import (
    download_medmnist,
    fashion_mnist_to_npz,
    intensity_rule,
    load_medmnist_npz,
    medmnist_records,
    read_idx,
)
from .mixed_dataset import MixedDataset
from .oasis import (
    OASIS_CLASSES,
    cdr_to_class,
    oasis_kaggle_records,
    oasis_volume_records,
    parse_oasis_filename,
    slice_volume_records,
)
from .prepare import image_spacing, prepare_medmnist_split, prepare_oasis_split, read_data_info, write_data_info
from .splits import SPLIT_NAMES, fractions_that_work, read_datalist, subject_stratified_split, write_datalist
from .synthetic_dataset import SyntheticDataset, load_trained_generator
from .transforms import (
    AsGrayscaled,
    CheckFinited,
    LoadImageCheckedd,
    UnitIntensityd,
    array_transforms,
    slice_transforms,
    volume_transforms,
)

__all__ = [
    "OASIS_CLASSES",
    "SPLIT_NAMES",
    "AsGrayscaled",
    "CheckFinited",
    "LoadImageCheckedd",
    "MixedDataset",
    "SyntheticDataset",
    "UnitIntensityd",
    "array_transforms",
    "assignment_loader",
    "build_oasis_demo",
    "cdr_to_class",
    "check_image_files",
    "download_medmnist",
    "fashion_mnist_to_npz",
    "fractions_that_work",
    "image_spacing",
    "intensity_rule",
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
    "read_image_file",
    "slice_transforms",
    "slice_volume_records",
    "subject_stratified_split",
    "summarize_errors_at_exit",
    "train_loader",
    "user_error",
    "volume_transforms",
    "write_data_info",
    "write_datalist",
]

"""Any benchmark data set written as a MedMNIST-layout ``.npz`` (e.g. the demo brain slices as a medical
MedMNIST-layout set for the benchmark and the augmentation experiment).

Usage::

    python -m monai_neurosql.benchmark.export_npz --dataset demo --demo-scale 16 --image-size 28 \
        --npz runs/demo_brains_28.npz
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .data import export_medmnist_npz, load_benchmark_data

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> Path:
    """Load ``--dataset`` as the benchmark does and write it with :func:`export_medmnist_npz`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark.export_npz", description=main.__doc__)
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--demo-scale", type=int, default=16)
    parser.add_argument("--csv-path", default=None)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--max-train", type=int, default=10**6)
    parser.add_argument("--work-dir", default="runs/data")
    parser.add_argument("--npz", required=True)
    args = parser.parse_args(argv)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, args.work_dir, max_reference=10**6,
                               csv_path=args.csv_path, demo_scale=args.demo_scale)
    path = export_medmnist_npz(data, args.npz)
    print(f"{path}: {len(data['train_images'])} training, {len(data['unseen_images'])} validation, "
          f"{len(data['reference_images'])} test images of {tuple(data['train_images'].shape[1:])}, "
          f"{data['num_classes']} classes")
    return path




if __name__ == "__main__":
    main()

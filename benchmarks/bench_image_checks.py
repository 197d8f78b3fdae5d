"""Preparing OASIS data before training: every file decoded vs only the files changed since the kept check.

:func:`monai_neurosql.data.prepare_oasis_split` (the OASIS bundle's first step) decodes every image file before any
dataset is cached (:func:`~monai_neurosql.data.check_image_files`: unreadable files named, blank ones skipped). It
now keeps each usable or blank file's verdict under its size and modification time in
``<output_dir>/image_checks.json``, so a later run decodes only the files that changed. This script builds the
embedded demo in the Kaggle layout (``--demo-scale`` times its 320 slices) and times, on the same records, a check
without kept verdicts, the first check with them (decodes all, writes the file), a second one (reads the file), and
one after ``--touch`` files changed. Then the OASIS-1 volume layout's slicing
(:func:`~monai_neurosql.data.slice_volume_records`, which keeps ``slices.json``) on ``--volumes`` synthetic
``176 x 208 x 176`` volumes (the OASIS-1 atlas-registered size): first run (reads every volume, writes the slices)
vs a second run.

Usage (from the repository root)::

    python benchmarks/bench_image_checks.py                  # 5120 slices (demo scale 16)
    python benchmarks/bench_image_checks.py --quick          # 320 slices, smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

from monai_neurosql.benchmark.data import DEMO_SUBJECTS
from monai_neurosql.data import build_oasis_demo, check_image_files, oasis_kaggle_records, slice_volume_records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-scale", type=int, default=16, help="demo slices x this (320 x 16 = 5120)")
    parser.add_argument("--touch", type=int, default=50, help="files rewritten before the last check")
    parser.add_argument("--volumes", type=int, default=16, help="synthetic OASIS-1 volumes sliced")
    parser.add_argument("--quick", action="store_true", help="demo scale 1, 10 files touched, 2 small volumes")
    args = parser.parse_args(argv)
    if args.quick:
        args.demo_scale, args.touch, args.volumes = 1, 10, 2
    shape = (24, 28, 20) if args.quick else (176, 208, 176)
    rows, volume_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = build_oasis_demo(Path(tmp) / "demo", subjects_per_class=tuple(args.demo_scale * c for c in DEMO_SUBJECTS))
        records = oasis_kaggle_records(root)
        kept = Path(tmp) / "out" / "image_checks.json"

        def timed(label: str, cache_file: Path | None) -> None:
            start = time.perf_counter()
            usable = check_image_files(records, cache_file=cache_file)
            seconds = time.perf_counter() - start
            log(f"{label}: {seconds:.2f} s, {len(usable)} usable")
            rows.append([label, f"{seconds:.2f}", str(len(usable))])

        timed("no kept verdicts (as before)", None)
        timed("first run: decodes all, writes the verdicts", kept)
        timed("next run: nothing changed", kept)
        for record in records[: args.touch]:
            path = Path(record["image"])
            path.write_bytes(path.read_bytes())
            os.utime(path, ns=(time.time_ns(), time.time_ns()))
        timed(f"next run: {args.touch} files rewritten", kept)
        volumes = []
        for i in range(args.volumes):
            data = np.zeros(shape, dtype=np.float32)
            core = tuple(slice(s // 8, s - s // 8) for s in shape)
            data[core] = np.random.default_rng(i).uniform(50, 100, size=[c.stop - c.start for c in core])
            path = Path(tmp) / f"OAS1_{i + 1:04d}_MR1" / "t88_masked_gfc.nii.gz"
            path.parent.mkdir()
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
            volumes.append({"image": str(path), "label": 0, "subject": f"OAS1_{i + 1:04d}", "session": "MR1"})
        start = time.perf_counter()
        for record in volumes:  # what every later run did before: read each volume to choose its slices
            data = np.asarray(nib.as_closest_canonical(nib.load(record["image"])).dataobj, dtype=np.float32)
            np.percentile(data, 99)
        seconds = time.perf_counter() - start
        volume_rows.append(["reading every volume (each later run before)", f"{seconds:.2f}", "-"])
        for label in ("first run: reads every volume, writes the slices", "next run: nothing changed"):
            start = time.perf_counter()
            cut = slice_volume_records(volumes, Path(tmp) / "slices")
            seconds = time.perf_counter() - start
            log(f"volumes, {label}: {seconds:.2f} s, {len(cut)} slices")
            volume_rows.append([label, f"{seconds:.2f}", str(len(cut))])
    print("# Checking the image files before training: all decoded vs kept verdicts\n")
    print("\n".join(machine_lines(torch.get_num_threads())) + "\n")
    print(f"{len(records)} slices of the embedded demo (Kaggle layout, scale {args.demo_scale}); the check's reader "
          f"threads: min(8, cores).\n")
    print(markdown_table(["check", "seconds", "usable files"], rows))
    print(f"\n{args.volumes} synthetic volumes of {' x '.join(map(str, shape))} voxels (.nii.gz), cut into axial "
          "slices (30-70% of the height):\n")
    print(markdown_table(["slicing", "seconds", "slices"], volume_rows))


if __name__ == "__main__":
    main()

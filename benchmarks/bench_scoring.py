"""The benchmark's scorer set up without and with the memorization audit's cached calibration, side by side.

:func:`monai_neurosql.benchmark.cells.run_scorer` builds one :class:`~monai_neurosql.metrics.SampleScorer` per cell
(and one for the controls); its dearest part is the memorization audit's held-out calibration (every held-out
image's two nearest training images in four spaces), which depends only on the run's images and encoder and is
now kept under ``<output>/audit_cache/``. This script builds the scorer twice on the same images: with an empty
cache (calibrates and writes it, as every cell did before) and with the filled cache (reads it, as every cell after
the first does now), then scores one set of images, and prints the seconds of each. The images are smooth random images and the encoder an untrained
:class:`~monai_neurosql.metrics.DomainEncoder` with two untrained cross-check encoders (timing only: no score is
reported), at the sizes of the 128 px demo-brain run (1000 training, 504 test images) by default.

Usage (from the repository root)::

    python benchmarks/bench_scoring.py                      # 128 px, 1000 training, 504 test images, 1 thread
    python benchmarks/bench_scoring.py --size 64
    python benchmarks/bench_scoring.py --quick              # 16 px, smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

from monai_neurosql.benchmark.cells import run_scorer
from monai_neurosql.metrics import DomainEncoder


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` smooth random ``size`` px images (upsampled 8 x 8 noise), no two alike."""
    low = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--test", type=int, default=504, help="test images (the audit's held-out set)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="16 px, 60 training and 410 test images")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.train, args.test = 16, 60, 410
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = {"train_images": smooth_images(args.train, args.size, 0),
            "reference_images": smooth_images(args.test, args.size, 1)}
    fake = smooth_images(args.test, args.size, 2)
    encoder, rows = DomainEncoder(2, 1, 64).eval(), []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("classifier", "autoencoder"):  # the run's cross-check spaces, loaded from files as there
            torch.save({"config": encoder.config, "state_dict": DomainEncoder(2, 1, 64).state_dict(), "info": {}},
                       Path(tmp) / f"domain_encoder_{kind}.pt")
        settings = {"output": tmp, "audit_samples": 1024, "threads": 1, "cross_spaces": ["classifier", "autoencoder"]}
        for label in ("empty cache: calibrates, writes", "filled cache: reads"):
            start = time.perf_counter()
            scorer = run_scorer(data, settings, encoder)
            setup = time.perf_counter() - start
            log(f"{label}: set up in {setup:.1f} s")
            rows.append([label, f"{setup:.1f}"])
        start = time.perf_counter()
        scorer(fake)
        call = time.perf_counter() - start
    print("# The benchmark's scorer: memorization-audit calibration computed vs read from its cache\n")
    print("\n".join(machine_lines(args.threads)) + "\n")
    print(f"{args.train} training and {args.test} test images at {args.size} px, three feature spaces (untrained "
          f"encoders: timing only). Scoring one set of {args.test} images with the scorer: {call:.1f} s.\n")
    print(markdown_table(["scorer built with", "set-up seconds"], rows))


if __name__ == "__main__":
    main()

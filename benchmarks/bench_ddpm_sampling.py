"""The DDPM baseline's sampling (DDIM chains) on the CPU by batch size, and with channels-last weights, side by side.

:meth:`monai_neurosql.baselines.DDPMTrainer.sample` runs its reverse chains on the CPU in batches of
``CPU_SAMPLE_BATCH`` images (the start noise still drawn in blocks of ``NOISE_BLOCK``, so the images do not depend
on the batch) with the U-Net's weights channels-last. This script samples the same seed with the U-Net the
benchmark builds at each image size (parameter-matched to the ConvGenerator, as
:func:`monai_neurosql.benchmark.cells.build_model` does) in batches of 256, 64, 16, 8 and 4 with the weights as
stored, and in batches of 8 channels-last (the default), alternating the settings (so that load on a shared
machine hits them alike); it prints the best time per image and step of each, the ratio to batches of 256 and the
largest difference between the images.

Usage (from the repository root)::

    python benchmarks/bench_ddpm_sampling.py                  # 28 and 64 px, 256 images x 4 steps, 1 thread
    python benchmarks/bench_ddpm_sampling.py --sizes 128 --num 256 --steps 2
    python benchmarks/bench_ddpm_sampling.py --quick          # 16 px, smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

from monai_neurosql.baselines import DDPMTrainer, matched_diffusion_unet
from monai_neurosql.benchmark.cells import build_generator
from monai_neurosql.networks import count_parameters

#: (label, batch size, channels-last weights)
SETTINGS = [("256", 256, False), ("64", 64, False), ("16", 16, False), ("8", 8, False), ("4", 4, False),
            ("8, channels-last (default)", 8, True)]


def trainer_for(size: int, steps: int) -> DDPMTrainer:
    """A DDPM trainer with the U-Net the benchmark builds for ``size`` px (random weights: timing only)."""
    unet = matched_diffusion_unet(2, 1, count_parameters(build_generator("conv", 2, 16, 1, size)), tolerance=0.2)
    loader = [{"image": torch.zeros(1, 1, size, size)}]
    return DDPMTrainer("cpu", 1, loader, unet, torch.optim.Adam(unet.parameters()), spatial_shape=(size, size),
                       num_inference_steps=steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64], help="image sizes (px)")
    parser.add_argument("--num", type=int, default=256, help="images sampled per setting")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps per chain (the benchmark runs 100)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best of each is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="16 px, 32 images, 2 steps, 1 repeat (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.num, args.steps, args.repeats = [16], 32, 2, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for size in args.sizes:
        trainer = trainer_for(size, args.steps)
        best = {label: float("inf") for label, _, _ in SETTINGS}
        images = {}
        for _ in range(args.repeats):
            for label, batch, last in SETTINGS:
                start = time.perf_counter()
                images[label] = trainer.sample(args.num, seed=0, batch_size=batch, channels_last=last)
                best[label] = min(best[label], time.perf_counter() - start)
                log(f"{size} px, batch {label}: {best[label]:.1f} s")
        base = best["256"]
        for label, _, _ in SETTINGS:
            ms = 1000 * best[label] / (args.num * args.steps)
            diff = float((images[label] - images["256"]).abs().max())
            rows.append([f"{size} px", f"{count_parameters(trainer.unet):,}", label, f"{ms:.1f}",
                         f"{base / best[label]:.2f}x", f"{diff:.1e}"])
    print("# DDPM sampling (DDIM) on the CPU: batch size and weight layout\n")
    print("\n".join(machine_lines(args.threads)) + "\n")
    print(f"{args.num} images x {args.steps} DDIM steps per setting, best of {args.repeats} alternating repeats.\n")
    print(markdown_table(["image", "U-Net parameters", "batch", "ms per image and step", "speed-up vs 256",
                          "max abs difference"], rows))


if __name__ == "__main__":
    main()

"""Issue 12's tables that the project's 2-core CPU cannot run in useful time, as stages for one GPU.

On the CPU a DDPM cell at 64 px takes about 24 minutes of training for 20 epochs and half an hour to sample the 504
scored images (docs/benchmarks.md, "The DDPM at 64 px"); early stopping adds a 256-sample validation every 10
epochs up to 120 epochs (about five to six hours per seed, before sampling on the CPU became 3.2x faster at 64 px:
docs/benchmarks.md, "The DDPM baseline's sampling on the CPU"), and 128 px is four times the pixels. Each stage is a
list of ``python -m monai_neurosql.benchmark`` commands sharing one output folder (encoders, controls and the
VAE's KL selection made once), in the order of what the tables lack most:

- ``demo64_ddpm_es``: the demo brains at 64 px, NeuroSQL and the DDPM each at its early-stopped best, 3 seeds.
- ``demo64_ddpm_wallclock``: the same folder, the DDPM given NeuroSQL's equal-epochs training time.
- ``demo128``: the demo brains at 128 px (item 5), NeuroSQL, VAE, GAN and DDPM under the three protocols.
- ``fmnist_ddpm_es``: Fashion-MNIST, NeuroSQL and the DDPM at their early-stopped best, 3 seeds.

Usage::

    python benchmarks/issue12_gpu.py                       # every stage, in that order
    python benchmarks/issue12_gpu.py demo128 --runs runs/gpu
    python benchmarks/issue12_gpu.py --quick               # every command on tiny settings on the CPU (smoke test)
    python benchmarks/issue12_gpu.py --list                # print the commands

Finished cells are kept (a rerun resumes). With ``--copy-to DIR`` (e.g. the device tool's ``$OUT``) the stage's
tables, CSVs and pictures are copied there after each command, without the checkpoints. Then follow docs/results/README.md
to publish them (raw files under ``docs/results/``, the tables in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DEMO = ["--dataset", "demo", "--demo-scale", "16", "--max-train", "1000", "--latent-sizes", "16", "--seeds", "0", "1",
        "2", "--num-samples", "2048"]
FMNIST = ["--dataset", "fashion-mnist", "--max-train", "2000", "--latent-sizes", "16", "--seeds", "0", "1", "2",
          "--num-samples", "1024"]
#: the DDPM's early stopping (as run on the 28 px brains): a validation sample costs it 100 reverse steps
DDPM_ES = ["--models", "ddpm", "--protocol", "early_stop", "--eval-every", "10", "--val-samples", "256",
           "--patience", "5", "--max-epochs", "120"]
VAE_BETAS = ["--vae-betas", "0.001", "0.005", "0.02"]

#: stage -> (output folder under --runs, commands as argument lists of ``monai_neurosql.benchmark``)
STAGES: dict[str, tuple[str, list[list[str]]]] = {
    "demo64_ddpm_es": ("demo64", [
        [*DEMO, "--image-size", "64", "--models", "neurosql", "--protocol", "early_stop"],
        [*DEMO, "--image-size", "64", *DDPM_ES],
    ]),
    "demo64_ddpm_wallclock": ("demo64", [
        [*DEMO, "--image-size", "64", "--models", "neurosql", "--protocol", "epochs", "--epochs", "20"],
        [*DEMO, "--image-size", "64", "--models", "ddpm", "--protocol", "wallclock", "--wallclock-seconds", "auto"],
    ]),
    "demo128": ("demo128", [
        [*DEMO, "--image-size", "128", "--models", "neurosql", "vae", "gan", "ddpm", *VAE_BETAS, "--protocol", "epochs",
         "--epochs", "20"],
        [*DEMO, "--image-size", "128", "--models", "vae", "gan", "ddpm", *VAE_BETAS, "--protocol", "wallclock",
         "--wallclock-seconds", "auto"],
        [*DEMO, "--image-size", "128", "--models", "neurosql", "vae", "gan", *VAE_BETAS, "--protocol", "early_stop"],
        [*DEMO, "--image-size", "128", *DDPM_ES],
    ]),
    "fmnist_ddpm_es": ("fmnist", [
        [*FMNIST, "--models", "neurosql", "--protocol", "early_stop"],
        [*FMNIST, *DDPM_ES],
    ]),
}

#: --quick: the sizes replaced by tiny ones (a list keeps its first value), the data set by a tiny labelled .npz
QUICK = {"--epochs": "1", "--max-train": "48", "--num-samples": "40", "--audit-samples": "40", "--batch-size": "16",
         "--encoder-epochs": "1", "--vae-betas": "0.005", "--ddpm-timesteps": "10", "--ddpm-sampling-steps": "2",
         "--val-samples": "20", "--max-epochs": "2", "--eval-every": "1", "--patience": "1", "--image-size": "16"}
FIRST_ONLY = ("--seeds", "--latent-sizes")
#: what --copy-to takes from a stage's folder (not the checkpoints or the data)
KEEP = ("*.csv", "*.md", "*.png", "*.json", "cells/*/samples.png")


def command(argv: list[str], output: Path, threads: int, device: str | None) -> list[str]:
    """A stage's arguments with its output folder, threads and device."""
    return [*argv, "--threads", str(threads), *(["--device", device] if device else []), "--output", str(output)]


def quick(argv: list[str], dataset: str) -> list[str]:
    """``argv`` with every size option replaced by its tiny value (the caps it lacks appended) and the data set by
    ``dataset`` (``--demo-scale``, a demo option, dropped)."""
    from monai_neurosql.benchmark.cli import with_options

    return with_options(argv, {**QUICK, "--dataset": dataset}, FIRST_ONLY, drop=("--demo-scale",))


def tiny_npz(path: Path) -> Path:
    """A labelled MedMNIST-layout ``.npz`` of random 16 x 16 images (3 classes) for ``--quick``."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 48), ("val", 40), ("test", 40)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 3).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def copy_results(folder: Path, target: Path) -> None:
    """The stage's tables, CSVs and pictures (no checkpoints) into ``target``."""
    for pattern in KEEP:
        for path in folder.glob(pattern):
            dest = target / path.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", help=f"stages to run (default: all, in order): {', '.join(STAGES)}")
    parser.add_argument("--runs", default="runs/issue12_gpu", help="folder of the stages' output folders")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--device", default=None, help="torch device (default: the benchmark's, CUDA when present)")
    parser.add_argument("--copy-to", default=None, help="copy each stage's tables and pictures here when it ends")
    parser.add_argument("--quick", action="store_true", help="tiny settings on the CPU: a smoke test of the commands")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)
    unknown = [stage for stage in args.stages if stage not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    runs = Path(args.runs)
    device = "cpu" if args.quick else args.device
    dataset = str(tiny_npz(runs / "tiny.npz")) if args.quick and not args.list else "tiny.npz"
    benchmark = importlib.import_module("monai_neurosql.benchmark.cli")
    for stage in args.stages or list(STAGES):
        folder, commands = STAGES[stage]
        output = runs / folder
        start = time.perf_counter()
        for stage_argv in commands:
            full = command(quick(stage_argv, dataset) if args.quick else stage_argv, output,
                           1 if args.quick else args.threads, device)
            print("python -m monai_neurosql.benchmark " + " ".join(full), flush=True)
            if not args.list:
                benchmark.main(full)
                if args.copy_to:  # after every command: a run cut short by a time limit still brings its cells back
                    copy_results(output, Path(args.copy_to) / folder)
        if not args.list:
            print(f"stage {stage}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark ``SyntheticDataset``: samples per second on the fly vs cached, and memory.

For the MedMNIST bundle's default generators (2D: ``ConvGenerator`` 28 x 28, d = 16, channels 128-64-32;
3D: the ``train_3d.json`` override, 28^3, channels 64-32-16) the script measures, each mode in a fresh process so
that its peak resident memory is its own:

- ``item by item``: ``dataset[i]`` in a loop (one forward pass per image);
- ``on the fly, DataLoader``: ``monai.data.DataLoader(dataset, batch_size)``, a batch decoded in one pass
  (``__getitems__``), optionally with worker processes (``--workers``);
- ``cache build``: ``SyntheticDataset(..., cache=True)``, generation of every image at construction;
- ``cached, DataLoader``: reading the cached images through the same DataLoader.

Speed does not depend on the weights, so the generators are freshly initialised (no training run needed);
the numbers are throughput, not quality. Memory: the cache holds ``num_samples x C x [SPATIAL]`` float32; the
table gives that size and each process's peak RSS (``VmHWM``; the baseline of a process that imports torch and
MONAI is the ``import only`` row; with DataLoader workers it is the main process's only, the workers' own memory is
not counted). DataLoader workers run torch with one thread each, the main process with ``--threads``: on a busy
machine the single-threaded workers can be faster than the main process alone for that reason.

Usage (from the repository root)::

    python benchmarks/bench_synthetic_dataset.py            # 2048 2D images, 256 3D volumes; a few minutes on 2 cores
    python benchmarks/bench_synthetic_dataset.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import cpu_check, fmt_ratio, log, machine_lines, markdown_table, peak_rss_mib, run_in_fresh_process

#: name -> (spatial_dims, spatial_size, channels): the MedMNIST bundle's train.json and its train_3d.json override.
CASES = {"2d": (2, 28, (128, 64, 32)), "3d": (3, 28, (64, 32, 16))}
LATENT_SIZE = 16


def build(case: str, num_samples: int, device: str, cache: bool, batch_size: int):
    from monai_neurosql import QuantileLattice
    from monai_neurosql.data import SyntheticDataset
    from monai_neurosql.networks import ConvGenerator

    spatial_dims, size, channels = CASES[case]
    torch.manual_seed(0)
    generator = ConvGenerator(spatial_dims, LATENT_SIZE, spatial_size=size, channels=channels)
    lattice = QuantileLattice.sobol_gaussian(1024, LATENT_SIZE)
    return SyntheticDataset(generator, lattice, num_samples, device=device, cache=cache, batch_size=batch_size,
                            progress=False)


def measure(mode: str, case: str, num_samples: int, device: str, batch_size: int, workers: int, threads: int) -> dict:
    """One mode in this (fresh) process: ``{"seconds", "samples", "peak_rss_mib", "cache_mib"}``."""
    from monai.data import DataLoader

    torch.set_num_threads(threads)
    result = {"cache_mib": 0.0}
    if mode == "import only":
        result.update(seconds=float("nan"), samples=0)
    elif mode == "item by item":
        dataset = build(case, num_samples, device, False, batch_size)
        count = min(num_samples, batch_size)
        dataset[0]  # warm-up
        start = time.perf_counter()
        for i in range(count):
            dataset[i]
        result.update(seconds=time.perf_counter() - start, samples=count)
    elif mode == "cache build":
        start = time.perf_counter()
        dataset = build(case, num_samples, device, True, batch_size)
        result.update(seconds=time.perf_counter() - start, samples=num_samples)
        result["cache_mib"] = dataset._cache.numel() * dataset._cache.element_size() / 2**20
    else:
        dataset = build(case, num_samples, device, mode.startswith("cached"), batch_size)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                            persistent_workers=workers > 0)
        next(iter(loader))  # warm-up (and worker start-up)
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        result.update(seconds=time.perf_counter() - start, samples=count)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--num-2d", type=int, default=2048, help="synthetic 2D images")
    parser.add_argument("--num-3d", type=int, default=256, help="synthetic 3D volumes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader worker counts, on the fly")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="256 2D images, 32 volumes")
    args = parser.parse_args()
    if args.quick:
        args.num_2d, args.num_3d = 256, 32

    print("# SyntheticDataset: samples per second on the fly vs cached\n")
    print("\n".join(machine_lines(args.threads)))
    print(f"- device: {args.device}; generators freshly initialised (speed does not depend on the weights); "
          "peak RSS with workers: the main process only\n")
    for case in args.cases:
        num = args.num_2d if case == "2d" else args.num_3d
        spatial_dims, size, channels = CASES[case]
        modes = ["import only", "item by item"] + [f"on the fly, DataLoader, {w} workers" for w in args.workers]
        modes += ["cache build", "cached, DataLoader, 0 workers"]
        results = {}
        for mode in modes:
            workers = int(mode.split(", ")[-1].split()[0]) if "DataLoader" in mode else 0
            log(f"{case}: {mode} ...")
            results[mode] = run_in_fresh_process(measure, mode, case, num, args.device, args.batch_size, workers,
                                                 args.threads)
        base_rate = results["item by item"]["samples"] / results["item by item"]["seconds"]
        rows = []
        for mode, r in results.items():
            rate = r["samples"] / r["seconds"] if r["samples"] else float("nan")
            rows.append([mode, f"{r['samples']}", "" if not r["samples"] else f"{r['seconds']:.3g}",
                         "" if not r["samples"] else f"{rate:,.0f}", "" if not r["samples"] else fmt_ratio(rate / base_rate),
                         f"{r['cache_mib']:.1f}" if r["cache_mib"] else "", f"{r['peak_rss_mib']:.0f}"])
        shape = "x".join([str(size)] * spatial_dims)
        print(f"## {case}: {num} samples of 1x{shape}, channels {list(channels)}, d = {LATENT_SIZE}, "
              f"batch size {args.batch_size}\n")
        print(markdown_table(["mode", "samples", "seconds", "samples/s", "vs item by item", "cache MiB",
                              "peak RSS MiB"], rows))
        print()
    print(f"CPU check at end: {cpu_check(args.threads)}")


if __name__ == "__main__":
    main()

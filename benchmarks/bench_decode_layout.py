"""``decode`` (``G(Q)`` of every assignment, sampling) with the weights as stored vs channels-last, side by side.

:func:`monai_neurosql.generate.decode` runs its forward passes with the generator's weights channels-last on the
CPU (:func:`monai_neurosql.generate.inference_layout`). This script decodes the same codes with the same weights
both ways, alternating the two (so that load on a shared machine hits both alike), for the package's generators at
the sizes users train, and prints the best time of each, their ratio and the largest difference between the images.

Usage (from the repository root)::

    python benchmarks/bench_decode_layout.py              # n = 1000 codes per case, 1 torch thread
    python benchmarks/bench_decode_layout.py --n 256 --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

from monai_neurosql.benchmark.cells import build_generator
from monai_neurosql.generate import decode
from monai_neurosql.networks import ConvGenerator


def cases(quick: bool) -> list[tuple[str, torch.nn.Module]]:
    """``(name, generator)``: the 2D generators exactly as the benchmark builds them
    (:func:`monai_neurosql.benchmark.cells.build_generator`, latent 16), and a narrower 3D ConvGenerator."""
    sizes = (28,) if quick else (28, 64, 128)
    out = [(f"ConvGenerator 2D {s} px", build_generator("conv", 2, 16, 1, s)) for s in sizes]
    if not quick:
        out += [
            ("ResNetGenerator 2D 64 px", build_generator("resnet", 2, 16, 1, 64)),
            ("FiLMUNetGenerator 2D 64 px", build_generator("film_unet", 2, 16, 1, 64)),
            ("ConvGenerator 3D 32^3", ConvGenerator(3, 16, spatial_size=32, channels=(64, 32, 16))),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="codes decoded per case (3D: a quarter)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; the best of each is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one small case (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, generator in cases(args.quick):
        n = args.n // 4 if "3D" in name else args.n
        codes = torch.randn(n, 16)
        best = {True: float("inf"), False: float("inf")}
        images = {}
        for _ in range(args.repeats):
            for channels_last in (False, True):
                start = time.perf_counter()
                images[channels_last] = decode(generator, codes, channels_last=channels_last)
                best[channels_last] = min(best[channels_last], time.perf_counter() - start)
        diff = float((images[True] - images[False]).abs().max())
        log(f"{name}: as stored {best[False]:.2f} s, channels-last {best[True]:.2f} s, max diff {diff:.1e}")
        rows.append([name, n, f"{best[False]:.2f}", f"{best[True]:.2f}", f"{best[False] / best[True]:.2f}x",
                     f"{diff:.1e}"])
    print("# decode: weights as stored vs channels-last (CPU)\n")
    print("\n".join(machine_lines(args.threads)) + "\n")
    print(markdown_table(["generator", "codes", "as stored s", "channels-last s", "speed-up", "max abs difference"],
                         rows))


if __name__ == "__main__":
    main()

"""Training iterations with the weights as stored vs channels-last, side by side, for every model of the benchmark.

Every trainer stores its networks' weights channels-last on the CPU before training
(:func:`monai_neurosql.generate.training_layout`; the trainers' ``channels_last=True``, the default), except the
FiLM U-Net's, which this script lays out by hand to show why (its row is marked). This script
builds each model exactly as ``python -m monai_neurosql.benchmark`` does
(:func:`monai_neurosql.benchmark.cells.build_model`: ConvGenerator backbone unless named, latent 16, batch 64, each
model's optimizer) twice from the same seed, once per layout, and times the same training iterations (forward,
loss, backward, optimizer step: the trainer's own ``_iteration`` on the same batches) alternating the two (so that
load on a shared machine hits both alike). It prints the best time per iteration of each, their ratio, and how far
apart the two layouts' losses are over a few identical first steps (float rounding, not a different training).
The benchmark's domain encoders (``train_domain_encoder``, which lays out alike) are timed over whole seeded epochs of
their own training loop, batch 128. The images are uniform noise: a dense convolution's time does not depend on the
pixel values.

Usage (from the repository root)::

    python benchmarks/bench_training_layout.py                 # all cases, 8 iterations x 3 repeats, 1 thread
    python benchmarks/bench_training_layout.py --cases ddpm-64 neurosql-conv-64
    python benchmarks/bench_training_layout.py --quick         # 16 px, smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

#: name -> (model, backbone, image size)
CASES = {
    "neurosql-conv-28": ("neurosql", "conv", 28),
    "neurosql-conv-64": ("neurosql", "conv", 64),
    "neurosql-conv-128": ("neurosql", "conv", 128),
    "neurosql-resnet-64": ("neurosql", "resnet", 64),
    "neurosql-film_unet-64": ("neurosql", "film_unet", 64),
    "vae-conv-64": ("vae", "conv", 64),
    "gan-conv-64": ("gan", "conv", 64),
    "ddpm-conv-28": ("ddpm", "conv", 28),
    "ddpm-conv-64": ("ddpm", "conv", 64),
    "encoder-contrastive-64": ("encoder", "contrastive", 64),
    "encoder-autoencoder-64": ("encoder", "autoencoder", 64),
    "encoder-contrastive-128": ("encoder", "contrastive", 128),
}
#: the domain encoders' batch (:func:`monai_neurosql.metrics.train_domain_encoder`'s default)
ENCODER_BATCH = 128


def encoder_epoch(kind: str, size: int, channels_last: bool, iterations: int) -> tuple[float, float]:
    """``(seconds per iteration, mean loss)`` of one seeded epoch of the benchmark's domain encoder of ``kind``
    (its training loop, :func:`monai_neurosql.metrics.domain_features._fit_encoder`) on ``iterations`` batches."""
    from monai_neurosql.metrics.domain_features import _fit_encoder

    torch.manual_seed(0)
    images = torch.rand(ENCODER_BATCH * iterations, 1, size, size)
    start = time.perf_counter()
    _, loss = _fit_encoder(images, None, kind, 64, (32, 64, 128), 0, 1, ENCODER_BATCH, 2e-3, torch.device("cpu"),
                           torch.Generator().manual_seed(0), channels_last)
    return (time.perf_counter() - start) / iterations, loss


def build(model: str, backbone: str, size: int, channels_last: bool, n: int, batch: int) -> tuple[Any, list]:
    """A trainer built as the benchmark builds it, seeded, and ``n // batch`` batches of its loader."""
    from monai.data import Dataset

    from monai_neurosql.benchmark.cells import build_model
    from monai_neurosql.data import train_loader

    torch.manual_seed(0)
    images = torch.rand(n, 1, size, size)
    data = {"train_images": images, "train_labels": torch.zeros(n, dtype=torch.long), "num_classes": 1}
    items = [{"image": images[i], "index": i, "label": 0} for i in range(n)]
    loader = train_loader(Dataset(items), batch, seed=0)
    cell = {"model": model, "variant": "default", "backbone": backbone, "latent_size": 16, "seed": 0,
            "conditional": False}
    settings = {"vae_beta": 0.005, "ddpm_sampling_steps": 2, "channels_last": channels_last}
    torch.manual_seed(0)
    built = build_model(cell, data, loader, 1, torch.device("cpu"), settings)
    return built, list(loader)


def steps(trainer: Any, batches: list) -> float:
    """Seconds for one training iteration per batch."""
    start = time.perf_counter()
    for batch in batches:
        trainer._iteration(trainer, batch)
    return time.perf_counter() - start


def losses(trainer: Any, batches: list, seed: int = 1) -> list[float]:
    """The loss of each iteration over ``batches``, the global RNG seeded first (the DDPM draws its noise there)."""
    torch.manual_seed(seed)
    return [float(trainer._iteration(trainer, batch)["loss"]) for batch in batches]


def encoder_row(name: str, kind: str, size: int, iterations: int, repeats: int) -> list[str]:
    """The table row of a domain encoder: whole seeded epochs, alternating the layouts."""
    best, loss = {False: float("inf"), True: float("inf")}, {}
    for _ in range(repeats):
        for last in (False, True):
            seconds, loss[last] = encoder_epoch(kind, size, last, iterations)
            best[last] = min(best[last], seconds)
        log(f"{name}: as stored {1000 * best[False]:.0f} ms, channels-last {1000 * best[True]:.0f} ms / iteration")
    return [f"{name} (batch {ENCODER_BATCH})", f"{size} px", "-", f"{1000 * best[False]:.0f}",
            f"{1000 * best[True]:.0f}", f"{best[False] / best[True]:.2f}x",
            f"{abs(loss[False] - loss[True]) / abs(loss[False]):.1e}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations per layout and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; the best of each is kept")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="three 16 px cases, 2 iterations, 1 repeat (smoke run)")
    args = parser.parse_args(argv)
    cases = {name: CASES[name] for name in args.cases}
    if args.quick:
        cases = {"neurosql-conv-16": ("neurosql", "conv", 16), "ddpm-conv-16": ("ddpm", "conv", 16),
                 "encoder-autoencoder-16": ("encoder", "autoencoder", 16)}
        args.iterations, args.repeats, args.batch = 2, 1, 8
    torch.set_num_threads(args.threads)
    rows = []
    for name, (model, backbone, size) in cases.items():
        if model == "encoder":
            rows.append(encoder_row(name, backbone, size, args.iterations, args.repeats))
            continue
        n = args.batch * args.iterations
        built = {last: build(model, backbone, size, last, n, args.batch) for last in (False, True)}
        # a network the trainers leave as stored (the FiLM U-Net) is laid out here by hand, to show why
        laid_out = not all(p.is_contiguous() for m in built[True][0]["modules"].values() for p in m.parameters())
        if not laid_out:
            for module in built[True][0]["modules"].values():
                module.to(memory_format=torch.channels_last)
        # the same steps from the same weights and RNG under both layouts: how far apart are their losses?
        loss = {last: losses(b["trainer"], batches[:4]) for last, (b, batches) in built.items()}
        apart = max(abs(x - y) / abs(x) for x, y in zip(loss[False], loss[True]))
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeats):
            for last in (False, True):
                b, batches = built[last]
                best[last] = min(best[last], steps(b["trainer"], batches) / len(batches))
            log(f"{name}: as stored {1000 * best[False]:.0f} ms, channels-last {1000 * best[True]:.0f} ms / iteration")
        rows.append([name, f"{size} px", f"{built[True][0]['params']:,}", f"{1000 * best[False]:.0f}",
                     f"{1000 * best[True]:.0f}" + ("" if laid_out else " (by hand: the package leaves it)"),
                     f"{best[False] / best[True]:.2f}x", f"{apart:.1e}"])
    print("# Training iterations on the CPU: weights as stored vs channels-last\n")
    print("\n".join(machine_lines(args.threads)) + "\n")
    print(f"Batch {args.batch}, best of {args.repeats} alternating repeats of {args.iterations} iterations per "
          "layout (the domain encoders: whole epochs of that many iterations); \"loss apart\": the largest "
          "relative difference between the two layouts' losses over their first 4 iterations from the same "
          "weights, batches and random numbers (the encoders: of their epochs' mean losses).\n")
    print(markdown_table(["case", "image", "params", "ms / iteration, as stored", "ms / iteration, channels-last",
                          "speed-up", "loss apart"], rows))


if __name__ == "__main__":
    main()

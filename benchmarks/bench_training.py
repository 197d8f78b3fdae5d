"""NeuroSQL training on Fashion-MNIST: epoch time split into regression and assignment, memory, loss curves.

Runs each configuration in its own spawned process (so peak memory is per configuration) and prints markdown
tables:

1. 2000 training images, 28x28, latent 16, ConvGenerator, AdamW + cosine, batch 64:
   full-batch exact assignment every 2 epochs (Algorithm 1), mini-batch assignment every iteration
   (Algorithm 2), and codes frozen at their random start (no assignment) as the control.
2. How the assignment's share of the training time grows with n (500 .. 4000), full batch, K = 2.

Usage::

    python benchmarks/bench_training.py                 # the tables of docs/benchmarks.md (~5 min on 2 cores)
    python benchmarks/bench_training.py --quick         # smoke run
    python benchmarks/bench_training.py --grid docs/images/fmnist_samples.png
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _images(n: int) -> torch.Tensor:
    from monai_neurosql.data import read_idx

    return torch.from_numpy(read_idx(FASHION)[:n].astype(np.float32) / 255.0)[:, None]


def _train(config: dict, queue: mp.Queue) -> None:
    """One training run (in a child process); puts a result dict on ``queue``."""
    from ignite.engine import Events
    from monai.data import Dataset
    from monai.handlers import LrScheduleHandler

    from monai_neurosql import LatentBank, SSIML1Loss, decode
    from monai_neurosql.data import assignment_loader, train_loader
    from monai_neurosql.engines import NeuroSQLTrainer
    from monai_neurosql.handlers import QuantileAssignmentHandler
    from monai_neurosql.networks import ConvGenerator

    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    n, epochs = config["n"], config["epochs"]
    images = _images(n)
    ds = Dataset([{"image": images[i], "index": i} for i in range(n)])
    generator = ConvGenerator(2, 16, spatial_size=28, channels=(256, 128, 64, 32))
    bank = LatentBank.create(n, 16, seed=0)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=2e-3, weight_decay=1e-4)
    loader = train_loader(ds, 64, seed=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    handlers = [LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)]
    assignment = None
    if config["mode"] in ("full", "minibatch"):
        assignment = QuantileAssignmentHandler(
            assignment_loader(ds) if config["mode"] == "full" else None, mode=config["mode"], every_n_epochs=2,
            settings={"method": "hungarian"})
        handlers.append(assignment)
    trainer = NeuroSQLTrainer("cpu", epochs, loader, generator, bank, optimizer, loss_function=SSIML1Loss(2),
                              train_handlers=handlers, seed=0)
    epoch_times, losses, current = [], [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: current.append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_times.append(time.perf_counter() - current[-1]))
    start = time.perf_counter()
    trainer.run()
    total = time.perf_counter() - start
    steps = len(loader)
    curve = [float(np.mean(losses[i * steps : (i + 1) * steps])) for i in range(epochs)]
    final = SSIML1Loss(2)(decode(generator, bank.codes), images).item()
    history = assignment.history if assignment is not None else []
    assign_seconds = sum(h["seconds"] for h in history)
    result = {
        **config,
        "total_s": total,
        "epoch_s": float(np.mean(epoch_times)),
        "assign_s": assign_seconds,
        "regress_s": total - assign_seconds,
        "assign_cost_s": sum(h["cost_seconds"] for h in history),
        "assign_solve_s": sum(h["solve_seconds"] for h in history),
        "assign_decode_s": sum(h["decode_seconds"] for h in history),
        "num_assignments": len(history),
        "curve": curve,
        "final_loss": final,
        "peak_rss_mb": peak_rss_mib(),
    }
    if config.get("grid"):
        from monai_neurosql import generate
        from monai_neurosql.visualize import save_grid_png

        fake = generate(generator, 32, bank.lattice, seed=0)
        save_grid_png(torch.cat([images[:16], fake]), config["grid"], nrow=16, scale=3)
    queue.put(result)


def run(config: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train, args=(config, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--grid", default=None, help="write real (top) / synthetic sample grid PNG here")
    args = parser.parse_args()
    n, epochs = (300, 4) if args.quick else (2000, 10)
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                   platform.processor())
    print(f"torch {torch.__version__}, {args.threads} threads, {cpu}\n")

    print(f"## Fashion-MNIST, n = {n}, 28x28, latent 16, ConvGenerator, batch 64, {epochs} epochs\n")
    rows = []
    for mode, label in (("full", "full batch, exact, every 2 epochs"), ("minibatch", "mini-batch (Alg. 2), exact 64x64"),
                        ("frozen", "codes frozen (no assignment)")):
        rows.append((label, run({"n": n, "epochs": epochs, "mode": mode, "threads": args.threads,
                                 "grid": args.grid if mode == "full" else None})))
    print("| mode | s / epoch | regression s (total) | assignment s (total) | assignment share | cost / solve / G(Q) s "
          "| peak RSS MB | final loss (all images, own codes) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        share = r["assign_s"] / r["total_s"]
        print(f"| {label} | {r['epoch_s']:.2f} | {r['regress_s']:.1f} | {r['assign_s']:.1f} | {100 * share:.0f}% | "
              f"{r['assign_cost_s']:.1f} / {r['assign_solve_s']:.2f} / {r['assign_decode_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['final_loss']:.4f} |")
    print("\nTraining loss per epoch (mean SSIM+L1 over the epoch's batches):\n")
    print("| epoch | " + " | ".join(label for label, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for e in range(epochs):
        print(f"| {e + 1} | " + " | ".join(f"{r['curve'][e]:.4f}" for _, r in rows) + " |")

    sizes = (200, 400) if args.quick else (500, 1000, 2000, 4000)
    print("\n## Assignment share of training time vs n (full batch, exact, K = 2, 2 epochs = 1 assignment)\n")
    print("| n | regression s / epoch | assignment s | of which cost matrix s | solve s | share of a K=2 cycle |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        r = run({"n": size, "epochs": 2, "mode": "full", "threads": args.threads})
        per_epoch = r["regress_s"] / 2
        share = r["assign_s"] / (r["assign_s"] + 2 * per_epoch)
        print(f"| {size} | {per_epoch:.2f} | {r['assign_s']:.2f} | {r['assign_cost_s']:.2f} | {r['assign_solve_s']:.2f} "
              f"| {100 * share:.0f}% |")


if __name__ == "__main__":
    main()

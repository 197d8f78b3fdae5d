"""Large n: mini-batch NeuroSQL on the whole Fashion-MNIST train set, and the full-batch sparse (certified) path.

1. Mini-batch mode (paper Algorithm 2, an m x m exact assignment per batch) at n = 2k, 10k and 60k training
   images, 200 iterations each (batch 64, 28x28, ConvGenerator, latent 16): seconds per iteration (regression and
   assignment), peak memory. The per-iteration work does not depend on n; memory grows only by the images held in
   memory (n x 3 KB) and the latent bank (n x d floats).
2. Full batch when the n x n cost matrix does not fit: each cost row keeps its K cheapest lattice points while the
   rows stream by, the sparse problem is solved by the epsilon-scaled auction and a dual certificate bounds the
   gap to the dense optimum. Compared with the dense exact path on the same n (a real generator's outputs vs
   images): time, peak memory, cost, certified gap.

Usage::

    python benchmarks/bench_large_n.py            # ~10 minutes on 2 cores
    python benchmarks/bench_large_n.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_fashion_mnist, machine_lines, markdown_table, peak_rss_mib, run_in_fresh_process


def minibatch_run(n: int, iterations: int, threads: int) -> dict:
    from ignite.engine import Events
    from monai.data import Dataset

    from monai_neurosql import LatentBank, SSIML1Loss
    from monai_neurosql.data import train_loader
    from monai_neurosql.engines import NeuroSQLTrainer
    from monai_neurosql.handlers import QuantileAssignmentHandler
    from monai_neurosql.networks import ConvGenerator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.from_numpy(load_fashion_mnist(n))
    ds = Dataset([{"image": images[i], "index": i} for i in range(n)])
    generator = ConvGenerator(2, 16, spatial_size=28, channels=(256, 128, 64, 32))
    bank = LatentBank.create(n, 16, seed=0)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=2e-3)
    handler = QuantileAssignmentHandler(mode="minibatch", settings={"method": "hungarian"})
    trainer = NeuroSQLTrainer("cpu", 1, train_loader(ds, 64, seed=0), generator, bank, optimizer,
                              loss_function=SSIML1Loss(2), train_handlers=[handler], epoch_length=iterations, seed=0)
    times: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: times.append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: times.__setitem__(-1, time.perf_counter() - times[-1]))
    trainer.run()
    steady = times[10:]  # leave out warm-up
    assign = handler.history[-1]["seconds"] / iterations
    return {"n": n, "s_per_iter": float(np.mean(steady)), "assign_s_per_iter": assign,
            "peak_mib": peak_rss_mib(), "images_mib": images.numel() * 4 / 2**20}


def full_batch_run(n: int, sparse: bool, candidates: int, threads: int) -> dict:
    from monai_neurosql import LatentBank, SSIML1Loss
    from monai_neurosql.assignment import assign_codes
    from monai_neurosql.networks import ConvGenerator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.from_numpy(load_fashion_mnist(n))
    generator = ConvGenerator(2, 16, spatial_size=28, channels=(128, 64, 32))
    # a briefly trained generator, so that the costs have the structure of a real run
    bank = LatentBank.create(n, 16, seed=0)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=2e-3)
    loss = SSIML1Loss(2)
    for step in range(60):
        idx = torch.randint(0, n, (64,), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss(generator(bank.codes[idx]), images[idx]).backward()
        optimizer.step()
    start_rss = peak_rss_mib()
    start = time.perf_counter()
    stats = assign_codes(generator.eval(), bank, images, settings={
        "momentum": 1.0, "max_dense_bytes": 1024 if sparse else 2**40, "candidates": candidates})
    return {"n": n, "path": "sparse, certified auction" if sparse else "dense, exact", "seconds": time.perf_counter() - start,
            "cost_s": stats["cost_seconds"], "solve_s": stats["solve_seconds"], "mean_cost": stats["cost"],
            "certified": bool(stats["certified"]), "gap_bound": stats["gap_bound"], "peak_mib": peak_rss_mib(),
            "dense_matrix_mib": n * n * 4 / 2**20, "start_mib": start_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    sizes = (500, 2000) if args.quick else (2000, 10000, 60000)
    iterations = 30 if args.quick else 200
    print("\n".join(machine_lines(args.threads)) + "\n")

    print(f"## Mini-batch mode (Algorithm 2), {iterations} iterations of batch 64 per n\n")
    rows = []
    for n in sizes:
        r = run_in_fresh_process(minibatch_run, n, iterations, args.threads)
        rows.append([f"{n:,}", f"{1000 * r['s_per_iter']:.1f}", f"{1000 * r['assign_s_per_iter']:.1f}",
                     f"{r['peak_mib']:.0f}", f"{r['images_mib']:.0f}"])
    print(markdown_table(["n", "ms / iteration", "of which assignment ms", "peak RSS MiB", "images in memory MiB"],
                         rows))

    n_full = 1000 if args.quick else 4000
    print(f"\n## Full batch, n = {n_full}: dense exact vs sparse candidates (K = 32) with certificate\n")
    rows = []
    for sparse in (False, True):
        r = run_in_fresh_process(full_batch_run, n_full, sparse, 32, args.threads)
        rows.append([r["path"], f"{r['seconds']:.1f}", f"{r['cost_s']:.1f}", f"{r['solve_s']:.1f}",
                     f"{r['mean_cost']:.6f}", "yes" if r["certified"] else "no", f"{r['gap_bound']:.1e}",
                     f"{r['peak_mib'] - r['start_mib']:.0f}", f"{r['dense_matrix_mib']:.0f}"])
    print(markdown_table(["path", "total s", "cost rows s", "solve s", "mean assigned cost", "certified",
                          "gap bound (total)", "peak RSS growth MiB", "dense matrix would be MiB"], rows))


if __name__ == "__main__":
    main()

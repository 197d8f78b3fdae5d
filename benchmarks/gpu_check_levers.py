"""GPU check of the assignment speed levers at 128 px (issue 13): one short run (about 3 minutes on a GPU).

Meant to run right after ``gpu_check.py`` from ``gpu_check.sh``. On CUDA it prints, side by side in one run:

1. The full-batch cost at 128 x 128 (n = 2048 images vs n decoded lattice points): ``pairwise_cost`` ssim_l1 vs
   l2 vs ssim_l1 on 2x-pooled images (64 px) vs the pruned exact cost (K = 64 candidates from an L2 bound at
   16 px), with the agreement of each assignment with the exact one and its exact-cost excess (lever a-c).
2. Reduced precision of the cost's cross term (lever f): the same costs with TF32 matmuls allowed
   (``torch.backends.cuda.matmul.allow_tf32``) and with the images in bfloat16 for the L2 GEMM; time, max
   difference from float32, agreement of the assignments.
3. The solve on the GPU cost: the package's CUDA auction vs the CPU exact solver (device-host copy included).
4. G(Q) at 128 px for n codes.

Without CUDA it exits at once (``--device cpu --quick`` runs the same code on tiny sizes, a smoke test).

Usage: ``python benchmarks/gpu_check_levers.py`` (add to ``gpu_check.sh`` after ``gpu_check.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assignment_levers import (
    PairCost,
    bound_cost,
    candidates,
    fashion,
    make_generator,
    pool,
    sparse_solve,
)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> tuple[float, Any]:
    """Min wall time of ``repeats`` calls (synchronized on CUDA) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, also on the CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: the lever checks need one (use --device cpu --quick for a smoke run).")
        sys.exit(0)
    from monai_neurosql import LatentBank, SSIML1Loss, decode, pairwise_cost, solve_assignment

    size, n = (32, 128) if args.quick else (128, 2048)
    loss = SSIML1Loss(2)
    kw = loss.cost_kwargs()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"# Assignment levers on {name}: {size} x {size}, n = {n}\n")

    torch.manual_seed(0)
    gen = make_generator(size, 16, 0).to(device)
    bank = LatentBank.create(n, 16, seed=0)
    images, _ = fashion(n, size)
    x = images.to(device)
    # an untrained generator's outputs are all alike; a real test set stands in for a trained G(Q)
    y = fashion(n, size, split="test")[0].to(device)
    t_dec, _ = timed(lambda: decode(gen, bank.lattice_points.to(device), None, 256), device)

    rows = []
    t_exact, exact = timed(lambda: pairwise_cost(x, y, kind="ssim_l1", **kw), device, repeats=1)
    t_solve, opt = timed(lambda: solve_assignment(exact, "hungarian"), device, repeats=1)
    opt = opt.to(device)
    optimum = float(exact[torch.arange(n, device=device), opt].double().sum())

    def report(label: str, seconds: float, col: torch.Tensor, note: str = "") -> None:
        col = col.to(device)
        same = float((col == opt).double().mean())
        excess = float(exact[torch.arange(n, device=device), col].double().sum()) / optimum - 1
        rows.append(f"| {label} | {seconds:.3g} | {t_exact / seconds:.3g}x | {100 * same:.1f} | {100 * excess:.3g} "
                    f"| {note} |")

    report("ssim_l1 (today)", t_exact, opt)
    for label, fn in (
        ("l2", lambda: pairwise_cost(x, y, kind="l2")),
        ("ssim_l1 on 2x-pooled", lambda: pairwise_cost(pool(x, 2), pool(y, 2), kind="ssim_l1", **kw)),
    ):
        t, cost = timed(fn, device)
        report(label, t, solve_assignment(cost, "hungarian"), "cost only; solve as above")
    previous = torch.randperm(n, generator=torch.Generator().manual_seed(1)).to(device)

    def pruned() -> torch.Tensor:
        cand = candidates(bound_cost(x, y, "l2", max(1, size // 16), None), 64, previous)
        costs = PairCost(x, y, loss)(cand)
        r = torch.arange(n).repeat_interleave(cand.shape[1]).numpy()
        return torch.from_numpy(sparse_solve(r, cand.reshape(-1).cpu().numpy(), costs.reshape(-1).cpu().numpy(), n))

    t, col = timed(pruned, device, repeats=1)
    report("prune K = 64 (L2 bound at 16 px) + sparse solve", t, col, "includes the CPU sparse solve")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        t, cost = timed(lambda: pairwise_cost(x, y, kind="ssim_l1", **kw), device)
        diff = float((cost - exact).abs().max())
        report("ssim_l1, TF32 matmuls", t, solve_assignment(cost, "hungarian"), f"max diff {diff:.1e}")
        t, cost = timed(lambda: pairwise_cost(x, y, kind="l2"), device)
        report("l2, TF32 matmuls", t, solve_assignment(cost, "hungarian"), "")
        torch.backends.cuda.matmul.allow_tf32 = False
        xb, yb = x.bfloat16(), y.bfloat16()
        t, cost = timed(lambda: pairwise_cost(xb, yb, kind="l2").float(), device)
        report("l2, bfloat16 images", t, solve_assignment(cost, "hungarian"), "")
    print("## Cost + assignment quality (exact SSIM+L1 = today's path)\n")
    print("| path | cost s | speed-up | same point as exact (%) | exact-cost excess (%) | note |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nExact solve (CPU, hungarian, copy included): {t_solve:.3g} s; G(Q) for {n} codes: {t_dec:.3g} s.")
    if device.type == "cuda":
        t_auc, col = timed(lambda: solve_assignment(exact, "auction"), device, repeats=1)
        report("auction on the exact cost", t_auc, col)
        print(f"CUDA auction on the exact cost: {t_auc:.3g} s, {rows[-1].split('|')[4].strip()}% same as exact.")


if __name__ == "__main__":
    main()

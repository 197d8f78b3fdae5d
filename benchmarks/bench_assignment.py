"""Benchmark ``solve_assignment``: scipy, lapx's lapjvs ("lapjv"), our default "hungarian" (the faster of the two
by size), "greedy" (Algorithm 3) and "auction" (epsilon-scaled auction in torch, the GPU path; on CPU here).

For each cost type and size ``n`` the script builds one ``n x n`` float32 cost matrix and reports, from one run:

- the time of each method through :func:`monai_neurosql.solve_assignment` (best of up to 3 runs when cheap);
- the speedup of "hungarian" over scipy and of "greedy" over "hungarian";
- the optimality gap of "hungarian" and "greedy" in % above scipy's optimum (totals summed in float64);
- the time of one read of the matrix (``cost.sum()``), a floor no solver can beat.

Cost types:

- ``uniform``: i.i.d. uniform ``[0, 1)`` costs;
- ``gaussian``: squared euclidean distances between two independent clouds of ``n`` standard Gaussian points
  in 16-d (structured costs, as between latent points);
- ``fmnist``: the NeuroSQL cost ``pairwise_cost(x, y, kind="ssim_l1")`` between ``n`` Fashion-MNIST training
  images and ``n`` other training images, a stand-in for the generator's outputs. The SSIM cost matrix takes
  minutes at large ``n``, so above ``--real-max-n`` the cheap ``kind="l2"`` cost on the same images is used
  instead and the row says so.

Usage (from the repository root)::

    python benchmarks/bench_assignment.py            # full run, about 5-10 minutes on 2 cores
    python benchmarks/bench_assignment.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from _common import (
    FASHION_MNIST_DIR,
    best_time,
    cpu_check,
    fmt_ratio,
    fmt_seconds,
    load_fashion_mnist,
    log,
    machine_lines,
    markdown_table,
)

COST_TYPES = ("uniform", "gaussian", "fmnist")
METHODS = ("scipy", "lapjv", "hungarian", "greedy", "auction")


# ---------------------------------------------------------------------------------------------- cost matrices
def uniform_cost(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n x n`` i.i.d. uniform ``[0, 1)`` costs, float32."""
    return rng.random((n, n), dtype=np.float32)


def gaussian_cost(n: int, rng: np.random.Generator, dim: int = 16) -> np.ndarray:
    """Squared euclidean distances between two clouds of ``n`` standard Gaussian points in ``dim``-d, float32."""
    a, b = rng.standard_normal((n, dim)), rng.standard_normal((n, dim))
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0).astype(np.float32)


def fmnist_cost(images: torch.Tensor, n: int, kind: str) -> np.ndarray:
    """``pairwise_cost(x, y, kind)``: ``x`` = ``images[:n]`` (data), ``y`` = ``images[n:2n]`` (stand-in outputs)."""
    from monai_neurosql import pairwise_cost

    return pairwise_cost(images[:n], images[n : 2 * n], kind=kind).numpy()


# ---------------------------------------------------------------------------------------------- measurement
def total(cost: np.ndarray, col_ind: np.ndarray) -> float:
    """``sum_i cost[i, col_ind[i]]`` in float64; checks that ``col_ind`` is a permutation."""
    if np.unique(col_ind).size != cost.shape[0]:
        raise RuntimeError("the assignment is not a permutation")
    return float(cost[np.arange(cost.shape[0]), col_ind].astype(np.float64).sum())


def solve_timed(cost: np.ndarray, method: str, repeats: int, budget_s: float) -> tuple[float, float]:
    """Best time of ``solve_assignment(cost, method)`` and the total cost of its assignment."""
    from monai_neurosql import solve_assignment

    seconds, col_ind = best_time(lambda: solve_assignment(cost, method=method).numpy(), repeats, budget_s)
    return seconds, total(cost, col_ind)


def run_one(label: str, build: Callable[[], np.ndarray], args: argparse.Namespace) -> list[str]:
    """Build one cost matrix, time every method on it and the floor, and return the table row."""
    start = time.perf_counter()
    cost = build()
    build_s = time.perf_counter() - start
    n = cost.shape[0]
    floor_s, _ = best_time(lambda: cost.sum(), 5, 1.0)
    seconds, totals = {}, {}
    for method in args.methods:
        if method == "auction" and n > args.auction_max_n:
            continue  # the dense CPU auction is the GPU path's reference, not a CPU contender: keep the run short
        log(f"[{label} n={n}] {method}")
        seconds[method], totals[method] = solve_timed(cost, method, args.repeats, args.budget)
    optimum = totals.get("scipy", float("nan"))

    def gap(method: str) -> str:
        if method not in totals:
            return "-"
        value = 100.0 * (totals[method] - optimum) / abs(optimum)
        return "0" if value == 0 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.1g}"

    def ratio(slow: str, fast: str) -> str:
        return fmt_ratio(seconds[slow] / seconds[fast]) if slow in seconds and fast in seconds else "-"

    def time_of(method: str) -> str:
        return fmt_seconds(seconds[method]) if method in seconds else "-"

    return [
        label, str(n), time_of("scipy"), time_of("lapjv"), time_of("hungarian"), time_of("greedy"),
        time_of("auction"), ratio("scipy", "lapjv"), ratio("hungarian", "greedy"), gap("hungarian"), gap("greedy"),
        gap("auction"), f"{floor_s * 1e3:.3g}", fmt_seconds(build_s),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke run (n = 256, 512)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192], help="values of n")
    parser.add_argument("--costs", nargs="+", default=list(COST_TYPES), choices=COST_TYPES, help="cost types")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods (gaps need scipy)")
    parser.add_argument("--auction-max-n", type=int, default=2048, help="largest n for the (CPU) auction")
    parser.add_argument("--real-max-n", type=int, default=4096,
                        help="largest n with the ssim_l1 cost for fmnist; larger n use kind='l2'")
    parser.add_argument("--real-size", type=int, default=28, help="Fashion-MNIST image size for fmnist costs")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs, within --budget")
    parser.add_argument("--budget", type=float, default=5.0, help="stop repeating a measurement after this many s")
    parser.add_argument("--seed", type=int, default=0, help="seed of the uniform and gaussian costs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--data-dir", default=str(FASHION_MNIST_DIR), help="Fashion-MNIST idx gz files")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.real_max_n = [256, 512], 512
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print("# solve_assignment: scipy vs lapjv vs hungarian (default) vs greedy vs auction\n")
    print("\n".join(machine_lines(args.threads)))
    print()
    images = None
    if "fmnist" in args.costs:
        log("loading Fashion-MNIST")
        images = torch.from_numpy(
            load_fashion_mnist(2 * max(args.sizes), split="train", size=args.real_size, data_dir=args.data_dir)
        )
        import monai_neurosql  # noqa: F401  (import before timing the first cost build)
    rows = []
    for cost_type in args.costs:
        for n in args.sizes:
            rng = np.random.default_rng(args.seed + n)
            if cost_type == "uniform":
                rows.append(run_one("uniform", partial(uniform_cost, n, rng), args))
            elif cost_type == "gaussian":
                rows.append(run_one("gaussian 16-d", partial(gaussian_cost, n, rng), args))
            else:
                kind = "ssim_l1" if n <= args.real_max_n else "l2"
                log(f"[fmnist n={n}] building the {kind} cost matrix")
                rows.append(run_one(f"fmnist {kind}",
                                    partial(fmnist_cost, images, n, kind), args))
    headers = ["cost", "n", "scipy (s)", "lapjv (s)", "hungarian (s)", "greedy (s)", "auction (s)",
               "lapjv vs scipy", "greedy vs hungarian", "gap hungarian (%)", "gap greedy (%)", "gap auction (%)",
               "floor: one read (ms)", "cost build (s)"]
    print(markdown_table(headers, rows))
    print(f"\nTimes: best of up to {args.repeats} runs of `solve_assignment(cost, method)` on a float32 numpy "
          "matrix (input checks included), single runs once a method's runs pass "
          f"{args.budget:g} s. Gaps: % above scipy's optimum. Floor: best `cost.sum()`. "
          f"fmnist: {args.real_size}x{args.real_size} training images 0..n-1 (rows) vs n..2n-1 (columns, a stand-in "
          f"for generator outputs); `ssim_l1` up to n = {args.real_max_n}, `l2` above. "
          "Cost build: time to make the matrix (for fmnist, `pairwise_cost`).")
    print(f"\nCPU check at end: {cpu_check(args.threads)}")


if __name__ == "__main__":
    main()

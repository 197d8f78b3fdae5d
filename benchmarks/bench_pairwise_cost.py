"""Benchmark ``pairwise_cost`` (all-pairs SSIM+L1 cost) against MONAI's SSIMMetric run row by row.

The naive way to fill the ``(m, k)`` NeuroSQL cost matrix is, for every row ``i``, to run
``monai.metrics.SSIMMetric(spatial_dims=2, reduction="none")`` on ``x[i:i+1].expand_as(y)`` against all of ``y``
and add the L1 term: ``C[i] = 0.5 * (1 - SSIM(x_i, y)) + 0.5 * mean|x_i - y|``. Both use MONAI's default SSIM
settings (Gaussian window 11, sigma 1.5, data_range 1, k1 0.01, k2 0.03).

For every case the script reports, from one run:

- pairs per second of each (the naive way is timed on a subset of rows against all ``k`` columns when running
  it in full would take minutes; its per-row cost does not depend on the row);
- peak memory of each: every measurement runs in a fresh ``spawn`` process and reports its peak RSS
  (``VmHWM``, see ``_common.peak_rss_mib``), minus that of a baseline process that only imports the same modules
  and loads the same inputs;
- the largest absolute difference between the two on the rows both computed, and of each against a float64
  evaluation of the same formula on those rows (both implementations compute in float32).

A second table times the cheap cost kinds ``"l1"`` and ``"l2"`` against ``"ssim_l1"``.

Usage (from the repository root)::

    python benchmarks/bench_pairwise_cost.py            # full run, several minutes on 2 cores
    python benchmarks/bench_pairwise_cost.py --quick    # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    FASHION_MNIST_DIR,
    best_time,
    cpu_check,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    load_fashion_mnist,
    log,
    machine_lines,
    markdown_table,
    peak_rss_mib,
    run_in_fresh_process,
)

# MONAI SSIMMetric defaults, also pairwise_cost's.
WIN_SIZE, SIGMA, DATA_RANGE, K1, K2 = 11, 1.5, 1.0, 0.01, 0.03
SSIM_WEIGHT = 0.5
# Run the naive way on every row when m * k * pixels stays below this (a few seconds), else on --naive-rows rows.
NAIVE_FULL_MAX = 2**26


@dataclass
class Case:
    """One ``(m, k)`` cost matrix at ``size x size`` pixels; the naive way runs on the first ``naive_rows``."""

    label: str
    size: int
    m: int
    k: int
    naive_rows: int


# ---------------------------------------------------------------------------------------------- the two ways
def naive_cost(metric: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The naive cost rows: for each ``x_i``, MONAI's SSIMMetric on ``x_i`` expanded against all of ``y``."""
    out = torch.empty(x.shape[0], y.shape[0])
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi = x[i : i + 1].expand_as(y)
            ssim = metric(y_pred=xi, y=y).reshape(-1)
            metric.reset()  # SSIMMetric is cumulative: do not keep every row's result in its buffer
            l1 = (xi - y).abs().flatten(1).mean(1)
            out[i] = SSIM_WEIGHT * (1.0 - ssim) + (1.0 - SSIM_WEIGHT) * l1
    return out


def measure(mode: str, x_path: str, y_path: str, params: dict[str, Any]) -> dict[str, Any]:
    """One measurement, run in a fresh process: ``mode`` is ``"baseline"``, ``"ours"`` or ``"naive"``.

    Every mode imports the same modules and loads the same inputs, so that ``peak_rss_mib`` minus the
    baseline's is the extra memory of the computation. Returns the best time (seconds), the peak RSS (MiB)
    and the first ``params["return_rows"]`` rows of the cost matrix.
    """
    from monai.metrics import SSIMMetric

    from monai_neurosql import pairwise_cost

    torch.set_num_threads(params["threads"])
    x = torch.from_numpy(np.load(x_path))
    y = torch.from_numpy(np.load(y_path))
    seconds, output = float("nan"), None
    if mode == "ours":
        seconds, cost = best_time(lambda: pairwise_cost(x, y, kind=params["kind"]), params["repeats"],
                                  params["budget_s"])
        output = cost[: params["return_rows"]].numpy().copy()
        del cost
    elif mode == "naive":
        metric = SSIMMetric(spatial_dims=2, data_range=DATA_RANGE, win_size=WIN_SIZE, kernel_sigma=SIGMA,
                            k1=K1, k2=K2, reduction="none")
        seconds, cost = best_time(lambda: naive_cost(metric, x[: params["rows"]], y), params["repeats"],
                                  params["budget_s"])
        output = cost[: params["return_rows"]].numpy().copy()
    elif mode != "baseline":
        raise ValueError(f"unknown mode {mode!r}")
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "output": output}


# ---------------------------------------------------------------------------------------------- reference
def _gaussian_kernel_float64() -> torch.Tensor:
    """MONAI's 2D SSIM window, computed in float64 from its definition."""
    t = torch.arange(WIN_SIZE, dtype=torch.float64) - (WIN_SIZE - 1) / 2
    g = torch.exp(-0.5 * (t / SIGMA) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def float64_reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(len(x), len(y))`` SSIM+L1 cost in float64, MONAI's formula (valid filtering, mean over windows)."""
    kernel = _gaussian_kernel_float64()
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    x, y = x.double(), y.double()
    mu_y = F.conv2d(y, kernel)
    var_y = F.conv2d(y * y, kernel) - mu_y * mu_y
    out = torch.empty(x.shape[0], y.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        mu_x = F.conv2d(xi, kernel)
        var_x = F.conv2d(xi * xi, kernel) - mu_x * mu_x
        cov = F.conv2d(xi * y, kernel) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        l1 = (xi - y).abs().flatten(1).mean(1)
        out[i] = SSIM_WEIGHT * (1.0 - ssim_map.flatten(1).mean(1)) + (1.0 - SSIM_WEIGHT) * l1
    return out


# ---------------------------------------------------------------------------------------------- driver
def _save_inputs(tmp: Path, x: np.ndarray, y: np.ndarray, tag: str) -> tuple[str, str]:
    x_path, y_path = tmp / f"x_{tag}.npy", tmp / f"y_{tag}.npy"
    np.save(x_path, x)
    np.save(y_path, y)
    return str(x_path), str(y_path)


def run_case(case: Case, x: np.ndarray, y: np.ndarray, tmp: Path, args: argparse.Namespace) -> list[str]:
    """Measure one case (baseline, ours, naive in fresh processes) and return its table row."""
    x_path, y_path = _save_inputs(tmp, x, y, f"{case.size}_{case.m}_{case.k}")
    common = {"threads": args.threads, "repeats": args.repeats, "budget_s": args.budget,
              "return_rows": case.naive_rows}
    log(f"[{case.label}] baseline")
    base = run_in_fresh_process(measure, "baseline", x_path, y_path, common)
    log(f"[{case.label}] pairwise_cost on {case.m} x {case.k}")
    ours = run_in_fresh_process(measure, "ours", x_path, y_path, {**common, "kind": "ssim_l1"})
    log(f"[{case.label}] naive SSIMMetric on {case.naive_rows} x {case.k}")
    naive = run_in_fresh_process(measure, "naive", x_path, y_path, {**common, "rows": case.naive_rows})
    log(f"[{case.label}] float64 reference on {case.naive_rows} x {case.k}")
    ref = float64_reference(torch.from_numpy(x[: case.naive_rows]), torch.from_numpy(y)).numpy()

    ours_rate = case.m * case.k / ours["seconds"]
    naive_rate = case.naive_rows * case.k / naive["seconds"]
    ours_mem = ours["peak_rss_mib"] - base["peak_rss_mib"]
    naive_mem = naive["peak_rss_mib"] - base["peak_rss_mib"]
    ours_out, naive_out = ours["output"].astype(np.float64), naive["output"].astype(np.float64)
    diff = np.abs(ours_out - naive_out).max()
    err_ours = np.abs(ours_out - ref).max()
    err_naive = np.abs(naive_out - ref).max()
    rows_note = "all" if case.naive_rows == case.m else f"{case.naive_rows} of {case.m}"
    mem_ratio = f"{ours_mem / naive_mem:.2f}" if naive_mem > 0 else "-"
    return [
        case.label, f"{case.size}x{case.size}", f"{case.m} x {case.k}",
        fmt_rate(ours_rate), fmt_rate(naive_rate), rows_note, fmt_ratio(ours_rate / naive_rate),
        f"{ours_mem:.0f}", f"{naive_mem:.0f}", mem_ratio,
        f"{diff:.1e}", f"{err_ours:.1e} / {err_naive:.1e}",
    ]


def run_kinds(size: int, n: int, x: np.ndarray, y: np.ndarray, tmp: Path, args: argparse.Namespace) -> list[list[str]]:
    """Time ``kind`` = ssim_l1, l1, l2 on the same ``n x n`` pairs; return the table rows."""
    x_path, y_path = _save_inputs(tmp, x, y, f"kinds_{size}_{n}")
    common = {"threads": args.threads, "repeats": max(args.repeats, 5), "budget_s": args.budget, "return_rows": 1}
    base = run_in_fresh_process(measure, "baseline", x_path, y_path, common)
    results = {}
    for kind in ("ssim_l1", "l1", "l2"):
        log(f"[kinds {size}x{size}] {kind}")
        results[kind] = run_in_fresh_process(measure, "ours", x_path, y_path, {**common, "kind": kind})
    rows = []
    for kind, res in results.items():
        rows.append([
            f"`{kind}`", f"{size}x{size}", f"{n} x {n}", fmt_seconds(res["seconds"] * 1e3),
            fmt_rate(n * n / res["seconds"]), fmt_ratio(results["ssim_l1"]["seconds"] / res["seconds"]),
            f"{res['peak_rss_mib'] - base['peak_rss_mib']:.0f}",
        ])
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run (m = k = 64 at 28x28 only, about a minute)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128],
                        help="image sizes of the m = k = --n cases")
    parser.add_argument("--n", type=int, default=256, help="m = k of the per-size cases")
    parser.add_argument("--full-n", type=int, default=2048, help="m = k of the full-batch cases (0: skip)")
    parser.add_argument("--full-sizes", type=int, nargs="*", default=[28, 64],
                        help="image sizes of the full-batch cases")
    parser.add_argument("--naive-rows", type=int, default=16,
                        help="rows the naive way is timed on when running it in full would be slow")
    parser.add_argument("--kinds-size", type=int, default=64, help="image size of the ssim_l1 / l1 / l2 table")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs, within --budget")
    parser.add_argument("--budget", type=float, default=20.0, help="stop repeating a measurement after this many s")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR, help="Fashion-MNIST idx gz files")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.n, args.full_n, args.full_sizes = [28], 64, 0, []
        args.naive_rows, args.kinds_size, args.repeats = 4, 28, 2
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cases = [Case("per-size", s, args.n, args.n, 0) for s in args.sizes]
    if args.full_n > 0:
        cases += [Case("full batch", s, args.full_n, args.full_n, 0) for s in args.full_sizes]
    for case in cases:
        full = case.m * case.k * case.size**2 <= NAIVE_FULL_MAX
        case.naive_rows = case.m if full else min(case.m, args.naive_rows)
    count = max(c.m for c in cases + [Case("", 0, args.n, args.n, 0)])

    print("# pairwise_cost vs row-by-row MONAI SSIMMetric\n")
    print("\n".join(machine_lines(args.threads)))
    print("\nRows: Fashion-MNIST training images; columns: Fashion-MNIST test images (28x28, or resized bilinear "
          "with antialiasing). Cost `0.5 (1 - SSIM) + 0.5 mean|x - y|`, MONAI's SSIM defaults.\n")
    log(f"loading {count} + {count} Fashion-MNIST images")
    train28 = load_fashion_mnist(count, split="train", data_dir=args.data_dir)
    test28 = load_fashion_mnist(count, split="test", data_dir=args.data_dir)

    def images(source: np.ndarray, n: int, size: int) -> np.ndarray:
        if size == 28:
            return np.ascontiguousarray(source[:n])
        resized = F.interpolate(torch.from_numpy(source[:n]), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
        return resized.clamp_(0.0, 1.0).numpy()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pairwise_") as tmp:
        for case in cases:
            x, y = images(train28, case.m, case.size), images(test28, case.k, case.size)
            rows.append(run_case(case, x, y, Path(tmp), args))
        headers = ["case", "image", "m x k", "ours (pairs/s)", "naive (pairs/s)", "naive rows timed",
                   "speedup", "ours peak (MiB)", "naive peak (MiB)", "memory ours/naive",
                   "max abs diff ours vs naive", "max abs err vs float64 (ours / naive)"]
        print("## ssim_l1: pairwise_cost vs naive\n")
        print(markdown_table(headers, rows))
        print(f"\nPairs/s: m*k / best time of up to {args.repeats} runs (naive: timed rows * k / time). Peak: "
              "peak RSS (VmHWM) of a fresh process minus that of a baseline process holding the same inputs. "
              "Differences and float64 errors over the naive rows x all k columns.\n")

        n = args.n
        kinds_rows = run_kinds(args.kinds_size, n, images(train28, n, args.kinds_size),
                               images(test28, n, args.kinds_size), Path(tmp), args)
    print("## Cost kinds: ssim_l1 vs l1 vs l2 (pairwise_cost)\n")
    print(markdown_table(["kind", "image", "m x k", "time (ms)", "pairs/s", "ssim_l1 time / this time",
                          "peak (MiB)"], kinds_rows))
    print(f"\nCPU check at end: {cpu_check(args.threads)}")


if __name__ == "__main__":
    main()

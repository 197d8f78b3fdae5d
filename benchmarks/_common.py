"""Helpers shared by the benchmark scripts: data loading, machine description, timing, tables.

The benchmarks are scripts, not part of the package: run them from the repository root, e.g.
``python benchmarks/bench_pairwise_cost.py``. They print markdown to stdout and progress to stderr.
"""

from __future__ import annotations

import datetime
import gzip
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from monai_neurosql.benchmark.memory import peak_rss_mib  # noqa: F401 - the scripts import it from here

#: Where the Debian package ``dataset-fashion-mnist`` installs Fashion-MNIST.
FASHION_MNIST_DIR = Path(os.environ.get("NEUROSQL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

T = TypeVar("T")


def log(message: str) -> None:
    """Progress message on stderr, so that stdout stays clean markdown."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- data
def load_fashion_mnist(
    count: int,
    offset: int = 0,
    split: str = "train",
    size: int = 28,
    data_dir: Path | str = FASHION_MNIST_DIR,
) -> np.ndarray:
    """``count`` Fashion-MNIST images from ``offset`` on, ``count x 1 x size x size`` float32 in ``[0, 1]``.

    Images are read from the idx gz files (16-byte header), scaled by 1/255 and, when ``size != 28``,
    resized with bilinear antialiased interpolation (``torch.nn.functional.interpolate``).
    """
    path = Path(data_dir) / f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: install the Debian package dataset-fashion-mnist or pass --data-dir."
        )
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic, num, rows, cols = np.frombuffer(raw, dtype=">u4", count=4)
    if magic != 2051:
        raise ValueError(f"{path} is not an idx3 image file (magic {magic}).")
    if offset + count > num:
        raise ValueError(f"asked for images {offset}..{offset + count} but {path} holds {num}.")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(num, 1, rows, cols)[offset : offset + count]
    images = images.astype(np.float32) / 255.0
    if size != rows:
        import torch
        import torch.nn.functional as F

        resized = F.interpolate(
            torch.from_numpy(images), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        images = resized.clamp_(0.0, 1.0).numpy()
    return np.ascontiguousarray(images)


# ---------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_ram_gib() -> float:
    """Total RAM in GiB from ``/proc/meminfo`` (NaN if unavailable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    """The 1-minute load average (other processes competing for the cores make timings noisy)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def gemm_gflops(threads: int, size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a float32 ``size x size`` matmul with ``threads`` torch threads, best of ``repeats``.

    A quick check of how much CPU the benchmark got: printed before and after, it shows when other processes
    were competing for the cores (multi-threaded kernels slow down far more than the lost share).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    a @ a  # warm up
    seconds, _ = best_time(lambda: a @ a, repeats, budget_s=10.0)
    torch.set_num_threads(previous)
    return 2 * size**3 / seconds / 1e9


def cpu_check(threads: int) -> str:
    """One line: load average and matmul GFLOP/s with 1 and ``threads`` threads, flagging a contended CPU."""
    single = gemm_gflops(1)
    line = f"load average {load_average()}, 1024^3 matmul {single:.0f} GFLOP/s on 1 thread"
    if threads > 1:
        multi = gemm_gflops(threads)
        line += f", {multi:.0f} GFLOP/s on {threads}"
        if multi < 1.3 * single:
            line += " (CPU contended: timings with several threads are unreliable, consider --threads 1)"
    return line


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(threads: int) -> list[str]:
    """Markdown bullet lines describing the machine and the library versions."""
    import torch

    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {total_ram_gib():.1f} GiB RAM",
        (f"- torch {torch.__version__} ({threads} threads), monai {_version('monai')}, "
        f"scipy {_version('scipy')}, numpy {np.__version__}, lapx {_version('lapx')}, "
        f"python {platform.python_version()}"),
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- CPU check at start: {cpu_check(threads)}",
        f"- command: `python {' '.join(sys.argv)}`",
    ]


# ---------------------------------------------------------------------------------------------- timing
def best_time(fn: Callable[[], T], repeats: int = 3, budget_s: float = 20.0) -> tuple[float, T]:
    """Best wall time of up to ``repeats`` calls of ``fn`` (at least one), and the last result.

    Stops repeating once the calls so far took more than ``budget_s`` in total: long measurements run once.
    """
    best, total, result = float("inf"), 0.0, None
    for _ in range(max(1, repeats)):
        result = None  # free the previous result before the next call: it would count in peak memory
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        best, total = min(best, elapsed), total + elapsed
        if total > budget_s:
            break
    return best, result  # type: ignore[return-value]


def run_in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new ``spawn`` process and return its result.

    A fresh process per measurement makes its peak RSS (:func:`peak_rss_mib`) a measurement of that call alone;
    ``tracemalloc`` does not see torch's allocations. ``fn`` must be importable (module level).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------------------------------------- benchmark runs
def add_run_arguments(parser: Any) -> None:
    """The data arguments of a finished ``python -m monai_neurosql.benchmark`` run (give the run's own) and its
    ``--output``, for the scripts that read that run's encoders and split."""
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--demo-scale", type=int, default=1)
    parser.add_argument("--output", required=True, help="the benchmark run's --output (encoders, cached data)")


def load_run_encoders(output: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Every feature space of a benchmark run: ``{"domain": domain_encoder.pt, <kind>: domain_encoder_<kind>.pt}``,
    and their display names (the domain space named with its kind)."""
    from monai_neurosql.metrics import load_domain_encoder

    encoders = {"domain": load_domain_encoder(output / "domain_encoder.pt")}
    for path in sorted(output.glob("domain_encoder_*.pt")):
        encoders[path.stem.removeprefix("domain_encoder_")] = load_domain_encoder(path)
    names = {k: (f"{k} ({e.info.get('kind')})" if k == "domain" else k) for k, e in encoders.items()}
    return encoders, names


# ---------------------------------------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with right-aligned columns except the first."""
    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_rate(value: float) -> str:
    """Pairs per second with thousands separators (``1,234,567``)."""
    return f"{value:,.0f}"


def fmt_seconds(value: float) -> str:
    """Seconds with 3 significant digits (``0.0123``, ``1.23``, ``123``)."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fmt_ratio(value: float) -> str:
    """A ratio as ``12.3x``."""
    return f"{value:.3g}x" if value < 1000 else f"{value:,.0f}x"

"""Speed levers for NeuroSQL's full-batch assignment, prototyped outside the package and measured (issue 13).

The assignment step builds ``C[i, k] = l(X_i, G(Q_k))`` for all ``n x n`` pairs (SSIM+L1 by default), solves it
exactly and moves the codes. On the CPU the cost matrix dominates (docs/benchmarks.md). This script measures the
candidate levers, each with what it saves and what it loses against today's exact full-resolution SSIM+L1
assignment:

(a) ``cost=l2``: the assignment on the mean squared error (one GEMM); the training loss stays SSIM+L1.
(b) ``pool=f``: the assignment cost on images average-pooled by ``f`` (an image pyramid), e.g. 64 -> 32.
(c) ``prune=K``: a cheap bound (L2 on pooled images, or L2 in a PCA projection) keeps each row's K cheapest
    lattice points plus the row's previous point (so a full matching always exists); the exact SSIM+L1 cost is
    computed only on those pairs and the sparse problem is solved exactly
    (``scipy.sparse.csgraph.min_weight_full_bipartite_matching``).
(d) warm start of the solver from the previous assignment's prices (the package's sparse auction) vs a cold
    solve; the exact CPU solvers (scipy, lapx) take no warm start.
(e) adaptive schedule: skip assignments while the last one moved fewer than ``min_moved`` of the codes (the
    interval doubles up to ``max_every`` epochs and resets when codes move again).
(f) reduced precision of the cost's cross term (CUDA only): not measurable on this CPU machine; see the notes.
(g) ``decode=bf16``: ``G(Q)`` under bfloat16 autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs), the cost
    still in float32.

Sub-commands (each prints markdown to stdout, progress to stderr; all timings with 1 torch thread, min of
interleaved repeats, and the load average before and after):

- ``profile``: the hot path at 28/64/128 px: ``pairwise_cost`` ssim_l1 vs l1 vs l2 vs pooled ssim_l1, the exact
  pair cost used by pruning, ``G(Q)`` and the solve, as ratios within one run.
- ``snapshot``: trains NeuroSQL (package defaults) and saves generator + latent bank at chosen epochs, the states
  on which ``agreement`` evaluates the levers.
- ``agreement``: on each snapshot, the exact full-resolution SSIM+L1 optimum vs every lever: time, fraction of
  rows given the same lattice point, and relative excess of the exact cost of the lever's assignment over the
  optimum (plus the excess of not re-assigning at all).
- ``moved``: a real training run with the package handler assigning every epoch: moved fraction, mean cost and
  held-out assignment cost per epoch (what an adaptive schedule would see).
- ``quality``: short trainings (variants x seeds) compared on the held-out SSIM+L1 assignment cost and a
  classifier-feature FID (speed-helper prototype: a small CNN trained here on Fashion-MNIST training images, its
  128-d penultimate features; not the package's domain-feature metric), with sample grids.

Usage (from the repository root)::

    python benchmarks/bench_assignment_levers.py profile --sizes 28 64 128
    python benchmarks/bench_assignment_levers.py snapshot --size 64 --n 2000 --epochs 4 6 12 --out runs/speed/s64
    python benchmarks/bench_assignment_levers.py agreement --snapshots runs/speed/s64/epoch6.pt
    python benchmarks/bench_assignment_levers.py moved --size 28 --n 2000 --epochs 20
    python benchmarks/bench_assignment_levers.py quality --size 28 --n 2000 --epochs 20 --seeds 0 1 \\
        --variant default:cost=ssim_l1 --variant l2:cost=l2 --out runs/speed/q28
    python benchmarks/bench_assignment_levers.py profile --quick     # smoke run of any sub-command: --quick
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FASHION_MNIST_DIR, load_average, load_fashion_mnist, log, markdown_table

#: Per-model AdamW learning rates, as in ``python -m monai_neurosql.benchmark``.
LEARNING_RATES = {"neurosql": 2e-3, "vae": 2e-3, "gan": 2e-4}
#: The shared backbone's widths (the benchmark's CPU-sized ConvGenerator).
CONV_CHANNELS = (256, 128, 64, 32)
#: Keys of a lever spec handled by the package's QuantileAssignmentHandler; anything else needs the prototype.
PACKAGE_KEYS = {"cost", "every", "method", "momentum"}
DEFAULT_CACHE = Path(os.environ.get("NEUROSQL_SPEED_CACHE", "/tmp/neurosql_speed_cache"))


# ============================================================================================== machine / timing
def conditions() -> str:
    """One line: load averages (1, 5, 15 min) and torch threads: the conditions a timing was taken under."""
    try:
        one, five, fifteen = os.getloadavg()
        load = f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        load = load_average()
    return f"load average (1/5/15 min) {load}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"


def interleaved_min(fns: dict[str, Callable[[], Any]], repeats: int, budget_s: float = 60.0) -> dict[str, float]:
    """Min wall time of each ``fns[name]()`` over ``repeats`` rounds that call every function once, in turn.

    Interleaving makes the other load on a shared machine hit every function alike; the minimum is the least
    disturbed run. Stops after a round once ``budget_s`` is spent (at least one round).
    """
    best = {name: float("inf") for name in fns}
    start = time.perf_counter()
    for r in range(max(1, repeats)):
        names = list(fns)
        names = names[r % len(names):] + names[: r % len(names)]  # rotate the order every round
        for name in names:
            t = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


def release_memory() -> None:
    """Return freed heap to the OS (glibc ``malloc_trim``) so that RSS measures live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) through ``/proc/self/clear_refs`` (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def rss_mib(field: str = "VmRSS") -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, MiB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(rf"{field}:\s+(\d+)", text)
    return int(match.group(1)) / 1024 if match else float("nan")


# ============================================================================================== data
def _idx_labels(split: str, data_dir: Path = FASHION_MNIST_DIR) -> np.ndarray:
    path = Path(data_dir) / f"{'train' if split == 'train' else 't10k'}-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def fashion(n: int, size: int, split: str = "train", offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Fashion-MNIST images (``n x 1 x size x size`` in [0, 1], bilinear antialiased resize) and labels."""
    images = torch.from_numpy(load_fashion_mnist(n, offset=offset, split=split, size=size))
    labels = torch.from_numpy(_idx_labels(split)[offset : offset + n].copy())
    return images, labels


def demo_brains(n: int, size: int, cache: Path = DEFAULT_CACHE) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` slices of the embedded OASIS-like demo (real MNI152 template, simulated subjects) at ``size`` px.

    The package's demo has 320 slices; for larger ``n`` a bigger demo (more simulated subjects, same recipe) is
    built once with :func:`monai_neurosql.data.build_oasis_demo` under ``cache``. Slices go through the package's
    ``slice_transforms`` (load, grey, percentile scaling, head crop, resize); the tensors are cached per size.
    """
    from monai.data import Dataset

    from monai_neurosql.data import build_oasis_demo, oasis_kaggle_records, slice_transforms

    subjects = max(40, math.ceil(n / 8))
    per_class = [max(1, round(subjects * f)) for f in (0.4, 0.25, 0.2, 0.15)]
    tensor_path = cache / f"demo_{sum(per_class)}s_{size}px.pt"
    if tensor_path.is_file():
        data = torch.load(tensor_path, weights_only=True)
    else:
        root = build_oasis_demo(cache / f"demo_{sum(per_class)}s", subjects_per_class=per_class)
        records = oasis_kaggle_records(root)
        ds = Dataset(records, slice_transforms(size))
        log(f"loading {len(records)} demo slices at {size} px")
        items = [ds[i] for i in range(len(ds))]
        data = {"images": torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items]).float(),
                "labels": torch.tensor([int(r["label"]) for r in records])}
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(data, tensor_path)
    if n > len(data["images"]):
        raise ValueError(f"asked for {n} demo slices, the demo built has {len(data['images'])}.")
    # spread the n slices over all subjects/classes rather than taking the first subjects only
    pick = torch.linspace(0, len(data["images"]) - 1, n).round().long()
    return data["images"][pick].contiguous(), data["labels"][pick]


def load_images(dataset: str, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels of ``dataset`` (``fashion-mnist`` or ``demo``) at ``size`` px."""
    if dataset == "fashion-mnist":
        return fashion(n, size)
    if dataset == "demo":
        return demo_brains(n, size)
    raise ValueError(f"dataset must be 'fashion-mnist' or 'demo', got {dataset!r}.")


def indexed_dataset(images: torch.Tensor, labels: torch.Tensor | None = None):
    """A MONAI ``Dataset`` of ``{"image", "index", "label"}`` dicts (the index ties an image to its code)."""
    from monai.data import Dataset

    labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels
    return Dataset([{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))])


# ============================================================================================== the levers
def pool(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool the spatial dims by ``factor`` (one level of an image pyramid); ``factor=1`` is a no-op."""
    if factor <= 1:
        return images
    pool_fn = F.avg_pool2d if images.ndim == 4 else F.avg_pool3d
    return pool_fn(images, factor)


class PairCost:
    """The SSIM+L1 cost of each row's candidates: ``out[i, j] = l(x[i], y[cand[i, j]])`` for ``cand (m, K)``.

    Per-image SSIM moments are computed once (float64, :class:`~monai_neurosql.SSIMWindow`, then kept in
    float32); each pair needs one filtering of ``x_i * y_k`` (the cross moment) and the formula, in row blocks of
    about 2 MiB so that the element-wise formula stays in cache. This is what pruning pays per kept candidate,
    0.7-1.4x the per-pair time of ``pairwise_cost`` (measured by ``profile``). In float32 the cross moment
    ``E[xy] - mu_x mu_y`` loses a few digits on bright flat windows (which ``pairwise_cost`` avoids with centered
    windows): up to about 1e-5 on the cost, far below the cost gaps between candidates.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, loss: Any, block_bytes: int = 2**21) -> None:
        self.window, self.weight, self.block_bytes = loss.window, loss.ssim_weight, block_bytes
        self.x, self.y = x.float(), y.float()
        self.mx, self.vx = (t.float() for t in self.window.moments(x))
        self.my, self.vy = (t.float() for t in self.window.moments(y))

    def __call__(self, cand: torch.Tensor) -> torch.Tensor:
        m, k = cand.shape
        pixels = math.prod(self.x.shape[1:])
        rows_per_block = max(1, int(self.block_bytes // (4 * pixels * k)))
        out = torch.empty(m, k, device=self.x.device)
        for s in range(0, m, rows_per_block):
            cb = cand[s : s + rows_per_block]
            b = len(cb)
            # (b*K, 1, ...) -> (b, K, ...): the candidates as channels, broadcast against the row's (b, 1, ...)
            yc, my, vy = (t[cb.reshape(-1)].view(b, k, *t.shape[2:]) for t in (self.y, self.my, self.vy))
            xr, mx = self.x[s : s + b], self.mx[s : s + b]
            cov = self.window.filter(xr * yc).sub_(mx * my)
            ssim = self.window.ssim_map(mx, my, self.vx[s : s + b], vy, cov, overwrite=True)
            l1 = yc.sub_(xr).abs_().flatten(2).mean(2)
            out[s : s + b] = self.weight * (1.0 - ssim.flatten(2).mean(2)) + (1.0 - self.weight) * l1
        return out


def pca_basis(images: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top-``dim`` principal directions ``(D, dim)`` of the flattened images (a cheap L2 lower bound:
    the L2 distance of projections never exceeds the full L2 distance)."""
    flat = images.reshape(len(images), -1).double()
    mean = flat.mean(0)
    _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    return mean.float(), vh[:dim].t().float().contiguous()


def bound_cost(x: torch.Tensor, y: torch.Tensor, bound: str, bound_pool: int,
               basis: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The cheap bound that ranks candidates: ``"l2"`` or ``"ssim_l1"`` (SSIM+L1 with the package's default window)
    on images pooled by ``bound_pool``, or ``"pca"`` (L2 in the PCA projection ``basis``)."""
    from monai_neurosql import pairwise_cost

    if bound in ("l2", "ssim_l1"):
        return pairwise_cost(pool(x, bound_pool), pool(y, bound_pool), kind=bound)
    if bound == "pca":
        if basis is None:
            raise ValueError("bound='pca' needs a PCA basis of the training images.")
        mean, vecs = basis
        px = (x.reshape(len(x), -1) - mean) @ vecs
        py = (y.reshape(len(y), -1) - mean) @ vecs
        return torch.cdist(px, py).pow_(2)
    raise ValueError(f"bound must be 'l2', 'ssim_l1' or 'pca', got {bound!r}.")


def sparse_solve(rows: np.ndarray, cols: np.ndarray, costs: np.ndarray, n: int) -> np.ndarray:
    """Exact min-cost perfect matching on the candidate graph (scipy's LAPJVsp); ``col_ind`` per row."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    # LAPJVsp ignores zero-weight entries (they are "no edge"): shift every weight up by a constant, which leaves
    # the optimal perfect matching unchanged
    graph = csr_matrix((costs - costs.min() + 1.0, (rows, cols)), shape=(n, n))
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    out = np.empty(n, dtype=np.int64)
    out[row_ind] = col_ind
    return out


def candidates(bound: torch.Tensor, k: int, previous: torch.Tensor | None) -> torch.Tensor:
    """Each row's ``k`` cheapest columns under ``bound``, plus its ``previous`` column when given (deduplicated:
    a row whose previous column is already among its ``k`` takes its ``k+1``-th instead)."""
    k = min(k, bound.shape[1])
    take = min(k + 1, bound.shape[1])
    top = bound.topk(take, dim=1, largest=False).indices
    cand = top[:, :k]
    if previous is None:
        return cand
    prev = previous.long().reshape(-1, 1)
    duplicate = (cand == prev).any(1, keepdim=True)
    extra = torch.where(duplicate, top[:, take - 1 : take], prev) if take > k else prev
    if take == k:  # k = n: every column is a candidate already
        return cand
    return torch.cat([cand, extra], 1)


def lever_assignment(x: torch.Tensor, decoded: torch.Tensor, lever: dict[str, Any], loss: Any,
                     previous: torch.Tensor | None = None, basis: tuple[torch.Tensor, torch.Tensor] | None = None,
                     pair_cost: PairCost | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One assignment with a lever: ``(col_ind, {"cost_seconds", "solve_seconds", "candidate_pairs"})``.

    ``lever`` keys: ``cost`` (``ssim_l1``/``l2``/``l1``), ``pool`` (int), ``prune`` (K, 0 = dense), ``bound``
    (``l2``/``pca``), ``bound_pool`` (int), ``method`` (dense solver). The dense path is the package's
    ``pairwise_cost`` (with the training loss's SSIM settings) and ``solve_assignment``.
    """
    from monai_neurosql import pairwise_cost, solve_assignment

    n = len(x)
    k = int(lever.get("prune", 0))
    t0 = time.perf_counter()
    if k <= 0:
        kind = lever.get("cost", "ssim_l1")
        kwargs = loss.cost_kwargs() if kind == "ssim_l1" else {}
        f = int(lever.get("pool", 1))
        cost = pairwise_cost(pool(x, f), pool(decoded, f), kind=kind, **kwargs)
        t1 = time.perf_counter()
        col = solve_assignment(cost, lever.get("method", "hungarian"))
        return col, {"cost_seconds": t1 - t0, "solve_seconds": time.perf_counter() - t1, "candidate_pairs": n * n}
    bound = bound_cost(x, decoded, lever.get("bound", "l2"), int(lever.get("bound_pool", 1)), basis)
    cand = candidates(bound, k, previous)
    pc = pair_cost if pair_cost is not None else PairCost(x, decoded, loss)
    costs = pc(cand)
    t1 = time.perf_counter()
    rows = torch.arange(n).repeat_interleave(cand.shape[1])
    col = torch.from_numpy(sparse_solve(rows.numpy(), cand.reshape(-1).numpy(), costs.reshape(-1).numpy(), n))
    return col, {"cost_seconds": t1 - t0, "solve_seconds": time.perf_counter() - t1,
                 "candidate_pairs": int(rows.numel())}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``(name, {key: value})``; numbers become int/float."""
    name, _, body = spec.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if not _:
            raise ValueError(f"bad setting {item!r} in {spec!r}: use key=value.")
        for cast in (int, float):
            try:
                settings[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            settings[key.strip()] = value.strip()
    return name.strip(), settings


# ============================================================================================== training
class LeverAssignment:
    """Prototype full-batch assignment handler with the levers (unconditional banks; outside the package).

    Runs at ``EPOCH_COMPLETED`` every ``every`` epochs: decodes ``G(Q)``, builds the lever's cost, solves, and
    applies the momentum update to the bank. With ``min_moved`` set (lever e), an assignment that moved fewer
    than that fraction of the codes doubles the interval (up to ``max_every`` epochs); one that moved more resets
    it to ``every``. ``decode="bf16"`` decodes ``G(Q)`` under bfloat16 autocast. ``history`` has the package
    handler's keys (``seconds``, ``decode_seconds``,
    ``cost_seconds``, ``solve_seconds``, ``cost``, ``moved``, ``epoch``) plus ``interval``.
    """

    def __init__(self, images: torch.Tensor, lever: dict[str, Any], loss: Any) -> None:
        self.images = images
        self.lever = dict(lever)
        self.loss = loss
        self.every = int(lever.get("every", 2))
        self.interval = self.every
        self.momentum = float(lever.get("momentum", 0.7))
        self.min_moved = float(lever.get("min_moved", 0.0))
        self.max_every = int(lever.get("max_every", 8 * self.every))
        self.next_epoch = self.every
        self.basis = None
        if lever.get("prune") and lever.get("bound") == "pca":
            self.basis = pca_basis(images, int(lever.get("pca_dim", 64)))
        self.history: list[dict[str, float]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = engine.state.epoch
        if epoch < self.next_epoch:
            return
        start = time.perf_counter()
        from monai_neurosql import decode

        bank = engine.bank
        t = time.perf_counter()
        generator = engine.generator_module
        if self.lever.get("decode") == "bf16":  # lever (g): G(Q) under bfloat16 autocast, images back in float32
            with torch.autocast(next(generator.parameters()).device.type, dtype=torch.bfloat16):
                decoded = decode(generator, bank.lattice_points, None, 256, device="cpu")
        else:
            decoded = decode(generator, bank.lattice_points, None, 256, device="cpu")
        decode_s = time.perf_counter() - t
        col, timing = lever_assignment(self.images, decoded, self.lever, self.loss,
                                       previous=bank.assignment.cpu(), basis=self.basis)
        rows = torch.arange(bank.n)
        moved = bank.update(rows, col, self.momentum)
        matched = float("nan")  # a lever's own cost is not the training loss: not comparable across levers
        if self.min_moved > 0:
            self.interval = self.every if moved >= self.min_moved else min(2 * self.interval, self.max_every)
        self.next_epoch = epoch + self.interval
        self.history.append({"epoch": float(epoch), "moved": moved, "cost": matched, "decode_seconds": decode_s,
                             "cost_seconds": timing["cost_seconds"], "solve_seconds": timing["solve_seconds"],
                             "seconds": time.perf_counter() - start, "interval": float(self.interval)})


def make_generator(size: int, latent: int, seed: int) -> nn.Module:
    """The shared backbone: ``ConvGenerator`` at the benchmark's widths, seeded."""
    from monai_neurosql.networks import ConvGenerator

    torch.manual_seed(seed)
    return ConvGenerator(2, latent, spatial_size=size, channels=CONV_CHANNELS)


def neurosql_trainer(images: torch.Tensor, labels: torch.Tensor, size: int, epochs: int, seed: int,
                     lever: dict[str, Any], latent: int = 16, batch_size: int = 64):
    """A NeuroSQL trainer with the package handler (settings in ``PACKAGE_KEYS``) or the prototype handler.

    Returns ``(trainer, assignment handler)``; AdamW + cosine + clipping 1.0 as in the package benchmark.
    """
    from monai.handlers import LrScheduleHandler

    from monai_neurosql import LatentBank, SSIML1Loss
    from monai_neurosql.data import assignment_loader, train_loader
    from monai_neurosql.engines import NeuroSQLTrainer
    from monai_neurosql.handlers import QuantileAssignmentHandler

    n = len(images)
    ds = indexed_dataset(images, labels)
    generator = make_generator(size, latent, seed)
    bank = LatentBank.create(n, latent, seed=seed)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=LEARNING_RATES["neurosql"], weight_decay=1e-4)
    loader = train_loader(ds, batch_size, seed=seed)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    loss = SSIML1Loss(2)
    if set(lever) <= PACKAGE_KEYS:
        handler = QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=int(lever.get("every", 2)),
                                            cost=lever.get("cost", "ssim_l1"), method=lever.get("method", "hungarian"),
                                            momentum=float(lever.get("momentum", 0.7)))
    else:
        handler = LeverAssignment(images, lever, loss)
    handlers = [LrScheduleHandler(scheduler, epoch_level=False, print_lr=False), handler]
    trainer = NeuroSQLTrainer("cpu", epochs, loader, generator, bank, optimizer, loss_function=loss,
                              train_handlers=handlers, seed=seed)
    return trainer, handler


# ============================================================================================== profile
def _profile_size(size: int, args: argparse.Namespace, loss: Any) -> tuple[list[list[str]], list[list[str]]]:
    """The rows of both profile tables for one image size."""
    from monai_neurosql import LatentBank, decode, pairwise_cost, solve_assignment

    m = args.m if size < 128 else max(16, args.m // 2)
    n_full = args.n if size < 128 else args.n_128
    x, _ = fashion(m, size)
    y, _ = fashion(m, size, split="test")
    kw = loss.cost_kwargs()
    fns: dict[str, Callable[[], Any]] = {
        "ssim_l1": lambda: pairwise_cost(x, y, kind="ssim_l1", **kw),
        "l1": lambda: pairwise_cost(x, y, kind="l1"),
        "l2": lambda: pairwise_cost(x, y, kind="l2"),
    }
    for f in (2, 4):
        if size // f >= 11:
            fns[f"ssim_l1 pool {f} ({size // f} px)"] = (
                lambda f=f: pairwise_cost(pool(x, f), pool(y, f), kind="ssim_l1", **kw))
    f16 = max(1, size // 16)
    if f16 > 1:
        fns[f"l2 pool {f16} ({size // f16} px)"] = lambda: pairwise_cost(pool(x, f16), pool(y, f16), kind="l2")
    pc = PairCost(x, y, loss)
    cand = torch.randint(0, m, (m, 64), generator=torch.Generator().manual_seed(0))
    fns["exact pairs (pruning), per pair"] = lambda: pc(cand)
    log(f"[profile {size} px] m = k = {m}")
    best = interleaved_min(fns, args.repeats, args.budget)
    base = best["ssim_l1"] / (m * m)
    cost_rows = []
    for name, sec in best.items():
        pairs = cand.numel() if name.startswith("exact pairs") else m * m
        per_pair = sec / pairs
        projected = f"{per_pair * n_full * n_full:.3g}" if pairs == m * m else f"{per_pair * n_full * 64:.3g} (K = 64)"
        cost_rows.append([f"{size}", name, f"{m} x {m}" if pairs == m * m else f"{pairs} pairs",
                          f"{pairs / sec:,.0f}", f"{base / per_pair:.3g}x", projected])
    gen = make_generator(size, 16, 0)
    bank = LatentBank.create(n_full, 16, seed=0)
    real, _ = fashion(n_full, size)
    other, _ = fashion(n_full, size, split="test")  # stand-in for a trained G(Q)'s outputs
    cost_l2 = pairwise_cost(real, other, kind="l2")
    log(f"[profile {size} px] G(Q) and solve at n = {n_full}")
    best = interleaved_min({
        "G(Q)": lambda: decode(gen, bank.lattice_points, None, 256),
        "solve hungarian": lambda: solve_assignment(cost_l2, "hungarian"),
        "solve greedy": lambda: solve_assignment(cost_l2, "greedy"),
    }, max(2, args.repeats // 2), args.budget)
    one_assignment = base * n_full * n_full + best["G(Q)"] + best["solve hungarian"]
    solve_rows = [[f"{size}", str(n_full), name, f"{sec:.3g}", f"{100 * sec / one_assignment:.1f}%"]
                  for name, sec in best.items()]
    return cost_rows, solve_rows


def cmd_profile(args: argparse.Namespace) -> None:
    from monai_neurosql import SSIML1Loss

    torch.set_num_threads(1)
    print("# Assignment hot path: cost kinds, pooled cost, pair cost, G(Q), solve (min of interleaved repeats)\n")
    print(f"- before: {conditions()}")
    print(f"- {args.repeats} interleaved rounds per size, 1 torch thread; pairs/s = m*k / min time\n")
    loss = SSIML1Loss(2)
    rows_out, solve_rows = [], []
    for size in args.sizes:
        cost_rows, size_solve_rows = _profile_size(size, args, loss)
        rows_out += cost_rows
        solve_rows += size_solve_rows
    projected = f"projected s for n x n (n = {args.n}; {args.n_128} at 128 px)"
    print("## pairwise_cost and friends\n")
    print(markdown_table(["px", "what", "pairs", "pairs/s", "speed vs ssim_l1", projected], rows_out))
    print("\n`speed vs ssim_l1`: per-pair time of `pairwise_cost(kind='ssim_l1')` / this per-pair time, same images, "
          "same run. Rows: Fashion-MNIST training images, columns: test images (resized, bilinear antialiased). "
          "`exact pairs (pruning)`: the exact SSIM+L1 of listed pairs (`PairCost`), what pruning pays per kept "
          "candidate; its projection is for n rows x 64 candidates.\n")
    print("## G(Q) and the solve (G(Q): ConvGenerator on all n lattice points; solve: on the L2 cost between n "
          "training and n test images, a stand-in for a trained generator's outputs)\n")
    print(markdown_table(["px", "n", "what", "min s", "share of one exact SSIM+L1 assignment (projected)"],
                         solve_rows))
    print(f"\n- after: {conditions()}")


# ============================================================================================== snapshot
def cmd_snapshot(args: argparse.Namespace) -> None:
    from ignite.engine import Events

    torch.set_num_threads(args.threads)
    images, labels = load_images(args.dataset, args.n, args.size)
    lever = dict(parse_spec("x:" + args.lever)[1])
    epochs = max(args.epochs)
    trainer, handler = neurosql_trainer(images, labels, args.size, epochs, args.seed, lever)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(engine: Any) -> None:
        # at the epoch's last iteration, i.e. before that epoch's assignment runs: the saved state is the problem the
        # assignment at this epoch solves (generator trained since the previous assignment, previous codes)
        if engine.state.iteration % engine.state.epoch_length == 0 and engine.state.epoch in args.epochs:
            state = {"generator": engine.generator_module.state_dict(), "bank": engine.bank.state_dict(),
                     "epoch": engine.state.epoch, "size": args.size, "dataset": args.dataset, "n": args.n,
                     "seed": args.seed, "lever": lever}
            torch.save(state, out / f"epoch{engine.state.epoch}.pt")
            log(f"saved {out / f'epoch{engine.state.epoch}.pt'}")

    trainer.add_event_handler(Events.ITERATION_COMPLETED, save)
    start = time.perf_counter()
    trainer.run()
    log(f"snapshot training took {time.perf_counter() - start:.0f} s; history: "
        f"{[(h['epoch'], round(h['moved'], 3)) for h in handler.history]}")


def load_snapshot(path: Path) -> tuple[nn.Module, Any, dict]:
    from monai_neurosql import LatentBank

    state = torch.load(path, weights_only=True)
    gen = make_generator(state["size"], 16, 0)
    gen.load_state_dict(state["generator"])
    bank = LatentBank.from_state_dict(state["bank"])
    return gen.eval(), bank, state


# ============================================================================================== agreement
AGREEMENT_LEVERS = [
    "exact ssim_l1:cost=ssim_l1",
    "greedy ssim_l1 (Alg. 3):cost=ssim_l1,method=greedy",
    "l2:cost=l2",
    "l1:cost=l1",
    "ssim_l1 pool 2:cost=ssim_l1,pool=2",
    "ssim_l1 pool 4:cost=ssim_l1,pool=4",
    "l2 pool 4:cost=l2,pool=4",
    "prune 16 (l2 bound @16px):prune=16,bound=l2,bound_pool=auto",
    "prune 32 (l2 bound @16px):prune=32,bound=l2,bound_pool=auto",
    "prune 64 (l2 bound @16px):prune=64,bound=l2,bound_pool=auto",
    "prune 128 (l2 bound @16px):prune=128,bound=l2,bound_pool=auto",
    "prune 32 (pca 64 bound):prune=32,bound=pca,pca_dim=64",
    "prune 64 (pca 64 bound):prune=64,bound=pca,pca_dim=64",
    "prune 64 (full-res l2 bound):prune=64,bound=l2,bound_pool=1",
    "prune 32 (ssim_l1 bound @16px):prune=32,bound=ssim_l1,bound_pool=auto",
    "prune 64 (ssim_l1 bound @16px):prune=64,bound=ssim_l1,bound_pool=auto",
    "prune 64 (ssim_l1 bound pool 2):prune=64,bound=ssim_l1,bound_pool=2",
]


def _excess(exact: torch.Tensor, col: torch.Tensor, optimum: float) -> float:
    got = float(exact[torch.arange(len(col)), col].double().sum())
    return (got - optimum) / optimum


def cmd_agreement(args: argparse.Namespace) -> None:
    from monai_neurosql import SSIML1Loss, decode, pairwise_cost, solve_assignment

    torch.set_num_threads(1)
    loss = SSIML1Loss(2)
    print("# Levers vs the exact full-resolution SSIM+L1 assignment, on trained NeuroSQL states\n")
    print(f"- before: {conditions()}\n")
    levers = [parse_spec(s) for s in (args.levers or AGREEMENT_LEVERS)]
    prices, prices_key = None, None
    for path in args.snapshots:
        gen, bank, state = load_snapshot(Path(path))
        size, n = state["size"], state["n"]
        images, _ = load_images(state["dataset"], n, size)
        decoded = decode(gen, bank.lattice_points, None, 256)
        previous = bank.assignment.cpu().clone()
        log(f"[agreement {path}] exact SSIM+L1 matrix {n} x {n} at {size} px")
        t = time.perf_counter()
        exact = pairwise_cost(images, decoded, kind="ssim_l1", **loss.cost_kwargs())
        exact_cost_s = time.perf_counter() - t
        t = time.perf_counter()
        opt_col = solve_assignment(exact, "hungarian")
        exact_solve_s = time.perf_counter() - t
        optimum = float(exact[torch.arange(n), opt_col].double().sum())
        basis = pca_basis(images, 64)
        rows = [["previous assignment (skip this assignment)", "0", "-", "-", "-",
                 f"{100 * float((previous == opt_col).double().mean()):.1f}",
                 f"{100 * _excess(exact, previous, optimum):.3g}", "-"]]
        rand = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
        rows.append(["random permutation (reference)", "0", "-", "-", "-",
                     f"{100 * float((rand == opt_col).double().mean()):.1f}", f"{100 * _excess(exact, rand, optimum):.3g}",
                     "-"])
        for name, lever in levers:
            lever = dict(lever)
            if lever.get("bound_pool") == "auto":
                lever["bound_pool"] = max(1, size // 16)
                name = name.replace("@16px", f"@{size // lever['bound_pool']}px")
            f = int(lever.get("pool", 1))
            if f > 1 and size // f < 11:
                continue  # the SSIM window (11 px) does not fit the pooled image
            bp = int(lever.get("bound_pool", 1))
            if lever.get("bound") == "ssim_l1" and (bp <= 1 or size // bp < 11):
                continue  # an unpooled SSIM bound is the exact cost; a too small one does not fit the window
            times, col, info = [], None, {}
            for _ in range(args.repeats):
                t = time.perf_counter()
                col, info = lever_assignment(images, decoded, lever, loss, previous=previous, basis=basis)
                times.append((time.perf_counter() - t, info["cost_seconds"], info["solve_seconds"]))
            total_s, cost_s, solve_s = min(times)
            recall = "-"
            if lever.get("prune"):
                cand = candidates(bound_cost(images, decoded, lever.get("bound", "l2"),
                                             int(lever.get("bound_pool", 1)), basis), int(lever["prune"]), previous)
                recall = f"{100 * float((cand == opt_col[:, None]).any(1).double().mean()):.1f}"
            same = float((col == opt_col).double().mean())
            if name.startswith("exact"):
                cost_s, solve_s, total_s = min(cost_s, exact_cost_s), min(solve_s, exact_solve_s), \
                    min(total_s, exact_cost_s + exact_solve_s)
                ref_total = total_s
            rows.append([name, f"{info['candidate_pairs']:,}", f"{cost_s:.3g}", f"{solve_s:.3g}", f"{total_s:.3g}",
                         f"{100 * same:.1f}", f"{100 * _excess(exact, col, optimum):.3g}", recall])
        for r in rows:
            r.append(f"{ref_total / float(r[4]):.3g}x" if r[4] not in ("-", "0") else "-")
        print(f"## {state['dataset']}, {size} px, n = {n}, snapshot after epoch {state['epoch']} "
              f"(trained with {state['lever'] or 'package defaults'}, seed {state['seed']})\n")
        print(f"Exact optimum: mean SSIM+L1 {optimum / n:.5f}; exact matrix {exact_cost_s:.3g} s, solve "
              f"{exact_solve_s:.3g} s.\n")
        print(markdown_table(["lever", "pairs scored", "cost s", "solve s", "total s", "same point as exact (%)",
                              "exact-cost excess over optimum (%)", "optimum in candidates (%)",
                              "speed-up vs exact"], rows))
        print()
        if args.warm_start:
            key = (str(Path(path).parent), n)
            prices = warm_start_rows(exact, prices if prices_key == key else None, args)
            prices_key = key
    print(f"- after: {conditions()}")


def warm_start_rows(exact: torch.Tensor, previous_prices: torch.Tensor | None,
                    args: argparse.Namespace) -> torch.Tensor | None:
    """Lever (d): the solve, cold vs warm-started from the previous assignment's prices.

    The exact CPU solvers (scipy, lapx) take no warm start; the package's auction takes prices. Prices of the
    previous snapshot's solve (the assignment K epochs earlier in the same run) warm-start this one. Returns
    this solve's prices for the next snapshot."""
    try:
        from monai_neurosql.auction import sparse_auction_assignment  # private; moved by the reshape
    except ImportError:
        try:
            from monai_neurosql.assignment.auction import sparse_auction_assignment
        except ImportError:
            print("(warm start: the package's sparse auction is not importable here; skipped)\n")
            return None
    from monai_neurosql import solve_assignment

    n = exact.shape[0]
    if n > args.warm_max_n:
        print(f"(warm start: skipped above n = {args.warm_max_n}: the CPU auction is slow)\n")
        return None
    cols = torch.arange(n).repeat(n, 1)  # every column a candidate: the dense problem through the sparse API
    t = time.perf_counter()
    cold = sparse_auction_assignment(cols, exact, n)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    solve_assignment(exact, "hungarian")
    lap_s = time.perf_counter() - t
    line = (f"Warm start (lever d), n = {n}: exact hungarian (no warm start possible) {lap_s:.3g} s; auction cold "
            f"{cold_s:.3g} s ({cold.iterations} bidding rounds)")
    if previous_prices is not None:
        t = time.perf_counter()
        warm = sparse_auction_assignment(cols, exact, n, prices=previous_prices)
        warm_s = time.perf_counter() - t
        line += (f", warm-started from the previous snapshot's prices {warm_s:.3g} s ({warm.iterations} rounds; "
                 f"same total: {abs(float(exact[torch.arange(n), warm.col_ind].double().sum()) - float(exact[torch.arange(n), cold.col_ind].double().sum())) < n * 1e-6})")
    print(line + ".\n")
    return cold.prices


# ============================================================================================== moved
def cmd_moved(args: argparse.Namespace) -> None:
    from ignite.engine import Events

    from monai_neurosql import heldout_assignment_cost

    torch.set_num_threads(args.threads)
    images, labels = load_images(args.dataset, args.n, args.size)
    held, _ = fashion(args.heldout, args.size, split="test") if args.dataset == "fashion-mnist" else \
        (load_images(args.dataset, args.n + args.heldout, args.size)[0][args.n:], None)
    lever = {"cost": args.cost, "every": 1}
    trainer, handler = neurosql_trainer(images, labels, args.size, args.epochs, args.seed, lever)
    rows: list[list[str]] = []
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))

    def record(engine: Any) -> None:
        h = handler.history[-1]
        steps = len(engine.data_loader)
        held_cost = heldout_assignment_cost(engine.generator_module, held, engine.bank.prior, engine.bank.dim)
        rows.append([str(engine.state.epoch), f"{np.mean(losses[-steps:]):.4f}", f"{100 * h['moved']:.2f}",
                     f"{h['cost']:.4f}", f"{held_cost:.4f}", f"{h['seconds']:.2f}"])
        log(" | ".join(rows[-1]))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)
    start = time.perf_counter()
    trainer.run()
    print(f"# Moved fraction per assignment: {args.dataset}, {args.size} px, n = {args.n}, assignment every epoch "
          f"(cost {args.cost}), seed {args.seed}, {args.epochs} epochs, cosine LR\n")
    print(markdown_table(["epoch", "train loss (epoch mean)", "codes moved (%)", "mean assigned cost (train)",
                          f"held-out SSIM+L1 assignment cost ({args.heldout} test images)", "assignment s"], rows))
    print(f"\nTotal {time.perf_counter() - start:.0f} s; {conditions()}")


# ============================================================================================== quality
class FeatureClassifier(nn.Module):
    """A small CNN for 28x28 grey images; ``features`` is its 128-d penultimate layer (the FID feature space)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 28:
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_feature_classifier(path: Path, count: int = 20000, epochs: int = 3, seed: int = 0) -> FeatureClassifier:
    """Train (or load from ``path``) the classifier on Fashion-MNIST training images ``30000..30000+count`` (kept
    apart from the generative models' training images), report its test accuracy."""
    net = FeatureClassifier()
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    torch.manual_seed(seed)
    x, y = fashion(count, 28, offset=30000)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(count)
        for s in range(0, count, 128):
            idx = perm[s : s + 128]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    xt, yt = fashion(5000, 28, split="test", offset=5000)
    with torch.no_grad():
        acc = float((net.eval()(xt).argmax(1) == yt).double().mean())
    log(f"feature classifier: test accuracy {acc:.3f} on test images 5000..9999")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    (path.parent / "classifier_accuracy.json").write_text(json.dumps({"test_accuracy": acc}))
    return net.eval()


@torch.no_grad()
def feature_stats(net: FeatureClassifier, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    feats = torch.cat([net.features(images[s : s + 500]) for s in range(0, len(images), 500)]).double().numpy()
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between Gaussians ``(mu, cov)`` (the FID formula)."""
    from scipy import linalg

    (mu1, s1), (mu2, s2) = a, b
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def quality_run(images: torch.Tensor, labels: torch.Tensor, held: torch.Tensor, size: int, epochs: int, seed: int,
                name: str, lever: dict[str, Any], samples: int, out: Path, threads: int,
                track_n: int = 0) -> dict[str, Any]:
    """One training run (in a child process): time, assignment history, held-out cost, samples saved to disk.

    With ``track_n`` the held-out assignment cost of the first ``track_n`` held-out images is also recorded after
    every epoch with an assignment (its time is excluded from the training time)."""
    from ignite.engine import Events

    from monai_neurosql import generate, heldout_assignment_cost

    torch.set_num_threads(threads)
    trainer, handler = neurosql_trainer(images, labels, size, epochs, seed, lever)
    track: list[tuple[int, float, float]] = []  # (epoch, held-out cost on a fixed subset, its seconds)

    def track_heldout(engine: Any) -> None:
        if track_n and handler.history and handler.history[-1]["epoch"] == engine.state.epoch:
            t = time.perf_counter()
            value = heldout_assignment_cost(engine.generator_module, held[:track_n], engine.bank.prior,
                                            engine.bank.dim)
            track.append((engine.state.epoch, value, time.perf_counter() - t))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, track_heldout)
    epoch_s: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epoch_s.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_s.__setitem__(-1, time.perf_counter() - epoch_s[-1]))
    start = time.perf_counter()
    trainer.run()
    total = time.perf_counter() - start - sum(t[2] for t in track)
    gen, bank = trainer.generator_module.eval(), trainer.bank
    held_cost = heldout_assignment_cost(gen, held, bank.prior, bank.dim)
    fake = generate(gen, samples, bank.lattice, seed=1000 + seed)
    torch.save(fake, out / f"{name}_seed{seed}_samples.pt")
    hist = handler.history
    return {"name": name, "seed": seed, "lever": lever, "total_s": total, "epoch_s": epoch_s,
            "assign_s": sum(h["seconds"] for h in hist), "assignments": len(hist),
            "moved": [h["moved"] for h in hist], "assign_epochs": [h["epoch"] for h in hist],
            "heldout_cost": held_cost, "heldout_track": [(e, v) for e, v, _ in track]}


def cmd_quality(args: argparse.Namespace) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from torchvision.utils import save_image

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = fashion(args.n, args.size)
    held, _ = fashion(args.heldout, args.size, split="test")
    variants = [parse_spec(s) for s in args.variant]
    jobs = [(name, lever, seed) for seed in args.seeds for name, lever in variants]
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {(r["name"], r["seed"]) for r in results}
    log(f"quality: {len(jobs)} runs, {len(done)} already done; {conditions()}")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool_:
        futures = [pool_.submit(quality_run, images, labels, held, args.size, args.epochs, seed, name, lever,
                                args.samples, out, args.threads, args.track)
                   for name, lever, seed in jobs if (name, seed) not in done]
        for fut in futures:
            r = fut.result()
            results.append(r)
            results_path.write_text(json.dumps(results, indent=1))
            log(f"done {r['name']} seed {r['seed']}: {r['total_s']:.0f} s, held-out {r['heldout_cost']:.4f}")
    net = train_feature_classifier(DEFAULT_CACHE / "fmnist_feature_cnn.pt")
    reference, _ = fashion(args.samples, args.size, split="test", offset=args.heldout)  # disjoint from `held`
    ref_stats = feature_stats(net, reference)
    other_real, _ = fashion(args.samples, args.size, split="train", offset=10000)
    floor = frechet(feature_stats(net, other_real), ref_stats)
    blurred = F.avg_pool2d(other_real, 4, stride=1, padding=0)
    blurred = F.interpolate(blurred, size=(args.size, args.size), mode="bilinear", align_corners=False)
    blur_fid = frechet(feature_stats(net, blurred), ref_stats)
    rows = []
    by_name: dict[str, list[dict]] = {}
    for r in results:
        fake = torch.load(out / f"{r['name']}_seed{r['seed']}_samples.pt", weights_only=True)
        r["cfid"] = frechet(feature_stats(net, fake), ref_stats)
        by_name.setdefault(r["name"], []).append(r)
    for name, _ in variants:
        rs = sorted(by_name.get(name, []), key=lambda r: r["seed"])
        if not rs:
            continue

        def ms(key: str, fmt: str = ".4f", rs: list[dict] = rs) -> str:
            vals = np.array([r[key] for r in rs], dtype=float)
            return f"{vals.mean():{fmt}} ± {vals.std(ddof=1) if len(vals) > 1 else 0:{fmt}}"

        for r in rs:
            r["s_per_epoch"] = r["total_s"] / args.epochs
            r["share"] = r["assign_s"] / r["total_s"]
            r["final_moved"] = 100 * r["moved"][-1] if r["moved"] else float("nan")
        rows.append([name, ", ".join(f"{k}={v}" for k, v in rs[0]["lever"].items()), str(len(rs)),
                     ms("cfid", ".1f"), ms("heldout_cost"), ms("s_per_epoch", ".2f"),
                     ms("share", ".2f"), ms("assignments", ".1f"), " / ".join(f"{r['cfid']:.1f}" for r in rs)])
        grid = torch.cat([held[:16]] + [torch.load(out / f"{r['name']}_seed{r['seed']}_samples.pt",
                                                   weights_only=True)[:16] for r in rs])
        save_image(grid, out / f"grid_{name}.png", nrow=16, padding=1)
    print(f"# Quality of the levers: Fashion-MNIST, {args.size} px, n = {args.n}, {args.epochs} epochs, d = 16, "
          f"ConvGenerator, seeds {args.seeds}\n")
    acc = json.loads((DEFAULT_CACHE / "classifier_accuracy.json").read_text())["test_accuracy"] \
        if (DEFAULT_CACHE / "classifier_accuracy.json").is_file() else float("nan")
    print(f"classifier-feature FID (speed-helper prototype): Frechet distance in the 128-d penultimate features of "
          f"a small CNN trained here on 20,000 Fashion-MNIST training images (test accuracy {acc:.3f}), {args.samples} "
          f"samples vs {args.samples} test images; images other than 28 px are resized to 28 px first. Not the "
          f"package's domain-feature metric. Controls: real floor (other real training images) {floor:.1f}, "
          f"blurred real images (4x4 box) {blur_fid:.1f}.\n")
    held_header = f"held-out SSIM+L1 assignment cost ↓ ({args.heldout} test images)"
    print(markdown_table(["variant", "settings", "seeds", "classifier-feature FID ↓", held_header,
                          "s / epoch (wall, 2 runs side by side)", "assignment share", "assignments", "per seed FID"],
                         rows))
    print(f"\nGrids: {out}/grid_<variant>.png (top row held-out real, then 16 samples per seed).\n")
    print("Codes moved (%) at each assignment, and the held-out SSIM+L1 assignment cost after it (when tracked):\n")
    track_rows = []
    for r in sorted(results, key=lambda r: (r["name"], r["seed"])):
        held_at = {int(e): v for e, v in r.get("heldout_track", [])}
        steps = [f"{int(e)}: {100 * m:.1f}" + (f" ({held_at[int(e)]:.4f})" if int(e) in held_at else "")
                 for e, m in zip(r["assign_epochs"], r["moved"])]
        track_rows.append([r["name"], str(r["seed"]), "; ".join(steps)])
    print(markdown_table(["variant", "seed", "epoch: moved % (held-out cost)"], track_rows))
    print(f"\n{conditions()}")


# ============================================================================================== CLI
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile", help="hot-path timings at 28/64/128 px")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    p.add_argument("--m", type=int, default=256, help="rows = columns of the timed cost matrices (half at 128 px)")
    p.add_argument("--n", type=int, default=2000, help="n for projections, G(Q) and the solve")
    p.add_argument("--n-128", type=int, default=1000, help="n at 128 px")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=120.0, help="seconds per size before stopping the rounds")
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("snapshot", help="train NeuroSQL and save states")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "demo"])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, nargs="+", default=[4, 6, 12],
                   help="epochs at whose end (before that epoch's assignment) the state is saved")
    p.add_argument("--lever", default="cost=ssim_l1,every=2", help="assignment settings of the training run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("agreement", help="levers vs the exact assignment on snapshots")
    p.add_argument("--snapshots", nargs="+", required=True)
    p.add_argument("--levers", nargs="*", default=None, help="name:key=value,... (default: the built-in list)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warm-start", action="store_true", help="also time lever (d)")
    p.add_argument("--warm-max-n", type=int, default=2000)
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("moved", help="moved fraction per epoch in a real run")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "demo"])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--cost", default="ssim_l1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("quality", help="short trainings per variant and seed")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variant", action="append", required=True, help="name:key=value,... (repeatable)")
    p.add_argument("--track", type=int, default=0,
                   help="record the held-out assignment cost of this many held-out images after every assignment")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        if args.cmd == "profile":
            args.sizes, args.m, args.n, args.n_128, args.repeats = [28], 32, 64, 32, 2
        elif args.cmd == "snapshot":
            args.n, args.epochs = 64, [1, 2]
        elif args.cmd == "agreement":
            args.repeats = 1
        elif args.cmd == "moved":
            args.n, args.heldout, args.epochs = 64, 32, 2
        elif args.cmd == "quality":
            args.n, args.heldout, args.samples, args.epochs, args.seeds = 64, 32, 64, 2, [0]
    {"profile": cmd_profile, "snapshot": cmd_snapshot, "agreement": cmd_agreement, "moved": cmd_moved,
     "quality": cmd_quality}[args.cmd](args)


if __name__ == "__main__":
    main()

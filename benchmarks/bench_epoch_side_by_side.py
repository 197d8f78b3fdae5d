"""NeuroSQL vs VAE vs GAN, side by side in one process: seconds per epoch, the assignment's share, peak memory.

Every model is built by ``python -m monai_neurosql.benchmark``'s own cell builder
(:func:`monai_neurosql.benchmark.cells.build_model`): the same images, the same backbone (``ConvGenerator``, widths
``(256, 128, 64, 32)``, latent 16; the VAE adds its MLP encoder, the GAN its discriminator), batch 64, each model's
optimizer and learning rate as there. Their epochs are interleaved: epoch 1 of every model, then epoch 2 of every
model (the order rotates each round), so that the other load on a shared machine hits every model alike; the
tables report ratios measured within the run.

NeuroSQL's epoch splits into regression and assignment. Its s / epoch is
``regression s / epoch + median assignment s x assignments per epoch`` (``1 / K`` for an assignment every K
epochs, whatever the run's length), where the regression epoch is the median iteration time (over all of the
model's iterations in the interleaved run, robust to minute-scale load swings) times the iterations per epoch; the
VAE's and the GAN's s / epoch are estimated the same way. The median (min) over whole epochs is shown beside it.
The assignment share is the assignment term over the sum, and the parts of one assignment are ``G(Q)`` (decoding
the lattice), the cost matrix, the solve and the rest (collecting the images on the first pass, the update).
Since all NeuroSQL variants run the same regression, a second table pools their iterations.

NeuroSQL variants are the benchmark's (:data:`monai_neurosql.benchmark.cells.NEUROSQL_VARIANTS`): ``paper`` (the
paper's exact SSIM+L1 assignment every 2 epochs: the default before issue 13) and ``default`` (the package's
defaults: the L2 assignment cost) by default; ``adaptive``, ``greedy``, ``minibatch`` on request. The adaptive
schedule saves assignments only late in training, so in a few-epoch timing run it assigns as the fixed one;
its saving is counted from the quality runs' assignment counts instead.

Peak memory: before each model's epoch the heap is trimmed and the process's peak RSS reset (``clear_refs``);
"peak RSS" is the process's peak during that model's epochs (it holds every model and the data), "epoch growth"
the peak minus the RSS at the epoch's start (the epoch's working memory); on CUDA also the peak allocated GPU memory
of the model's epochs (``torch.cuda.max_memory_allocated``, reset before each epoch).

Usage (from the repository root)::

    python benchmarks/bench_epoch_side_by_side.py --sizes 28 64 --n 2000 --epochs 4
    python benchmarks/bench_epoch_side_by_side.py --sizes 128 --n-128 1000 --epochs 3
    python benchmarks/bench_epoch_side_by_side.py --dataset demo --demo-scale 8 --sizes 64 --variants paper default
    python benchmarks/bench_epoch_side_by_side.py --quick      # tiny smoke run (under a minute)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, markdown_table

DEFAULT_VARIANTS = ["paper", "default"]
DEFAULT_CACHE = Path(os.environ.get("NEUROSQL_SPEED_CACHE", "/tmp/neurosql_speed_cache"))


def conditions() -> str:
    """One line: load averages (1, 5, 15 min), cores and torch threads: the conditions a timing was taken under."""
    try:
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    return f"load average (1/5/15 min) {load}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"


def release_memory() -> None:
    """Return freed heap to the OS (glibc ``malloc_trim``) so that RSS measures live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then includes freed heap, the table says "epoch growth"
        pass


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) through ``/proc/self/clear_refs`` (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_images(dataset: str, n: int, size: int, demo_scale: int) -> dict[str, Any]:
    """``n`` training images of ``dataset`` at ``size`` px, as :func:`monai_neurosql.benchmark.data.load_benchmark_data`
    gives them (cached under ``$NEUROSQL_SPEED_CACHE``)."""
    from monai_neurosql.benchmark.data import load_benchmark_data

    data = load_benchmark_data(dataset, size, n, DEFAULT_CACHE, max_reference=16, demo_scale=demo_scale)
    if len(data["train_images"]) < n:
        raise ValueError(f"{dataset} gave {len(data['train_images'])} training images at {size} px, fewer than "
                         f"n = {n}; lower --n or raise --demo-scale.")
    return data


class EpochStepper:
    """Runs an ignite/MONAI trainer one epoch per call (``interrupt`` at the epoch's end, ``run`` resumes)."""

    def __init__(self, name: str, trainer: Any, assignment: Any = None) -> None:
        from ignite.engine import Events

        self.name, self.trainer, self.assignment = name, trainer, assignment
        self.rate = 1.0 / assignment.every_n_epochs if assignment is not None else 0.0
        # registered after the trainer's own handlers, so the assignment of that epoch runs before the interrupt
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._pause)
        self.iterations: list[float] = []
        self._iter_start = 0.0
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._iteration_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        self.epochs: list[dict[str, Any]] = []

    def _iteration_started(self, engine: Any) -> None:
        self._iter_start = time.perf_counter()

    def _iteration_completed(self, engine: Any) -> None:
        _synchronize()  # CUDA runs asynchronously: time the finished step
        self.iterations.append(time.perf_counter() - self._iter_start)

    @staticmethod
    def _pause(engine: Any) -> None:
        if engine.state.epoch < engine.state.max_epochs:  # the last epoch ends the run normally
            engine.interrupt()

    def step(self) -> None:
        release_memory()
        peak_reset = reset_peak_rss()
        from monai_neurosql.benchmark.memory import rss_mib

        rss0 = rss_mib()
        seen = len(self.assignment.history) if self.assignment is not None else 0
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _synchronize()
        start = time.perf_counter()
        self.trainer.run()
        _synchronize()
        seconds = time.perf_counter() - start
        new = self.assignment.history[seen:] if self.assignment is not None else []
        assign = sum(h["seconds"] for h in new)
        from monai_neurosql.benchmark.memory import peak_rss_mib

        self.epochs.append({
            "seconds": seconds, "assign_s": assign, "regress_s": seconds - assign, "assignments": len(new),
            "decode_s": sum(h["decode_seconds"] for h in new), "cost_s": sum(h["cost_seconds"] for h in new),
            "solve_s": sum(h["solve_seconds"] for h in new), "moved": [h["moved"] for h in new],
            "peak_mib": peak_rss_mib() if peak_reset else float("nan"), "rss0_mib": rss0,
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
        })

    def summary(self) -> dict[str, Any]:
        e = self.epochs
        reg = [x["regress_s"] for x in e]
        assigns = [x for x in e if x["assignments"]]

        def med(key: str) -> float:
            values = [x[key] / x["assignments"] for x in assigns]
            return statistics.median(values) if values else 0.0

        assign_med = med("assign_s")
        assign_min = min((x["assign_s"] / x["assignments"] for x in assigns), default=0.0)
        per_epoch_iters = len(self.iterations) / len(e)
        reg_iter = statistics.median(self.iterations) * per_epoch_iters
        s_iter = reg_iter + self.rate * assign_med
        return {
            "name": self.name, "epochs": len(e), "regress_med": statistics.median(reg), "regress_min": min(reg),
            "assign_med": assign_med, "assign_rate": self.rate,
            "s_epoch_med": statistics.median(reg) + self.rate * assign_med,
            "s_epoch_min": min(reg) + self.rate * assign_min,
            "regress_iter": reg_iter, "s_epoch_iter": s_iter, "iteration_times": list(self.iterations),
            "iterations_per_epoch": per_epoch_iters, "share_iter": self.rate * assign_med / s_iter if s_iter else 0.0,
            "decode_med": med("decode_s"), "cost_med": med("cost_s"), "solve_med": med("solve_s"),
            "peak_mib": max(x["peak_mib"] for x in e), "growth_mib": max(x["peak_mib"] - x["rss0_mib"] for x in e),
            "cuda_peak_mib": max(x["cuda_peak_mib"] for x in e),
            "moved": [m for x in e for m in x["moved"]],
        }


def run_size(dataset: str, size: int, n: int, epochs: int, variants: list[str], models: list[str], seed: int,
             demo_scale: int, device: str = "cpu") -> list[dict[str, Any]]:
    """Build every model on the same images, interleave their epochs, return one summary per model."""
    from monai.data import Dataset

    from monai_neurosql.benchmark.cells import build_model
    from monai_neurosql.data import train_loader

    data = load_images(dataset, n, size, demo_scale)
    images, labels = data["train_images"][:n], data["train_labels"][:n]
    data = {**data, "train_images": images, "train_labels": labels}
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(n)]
    settings = {"vae_beta": 0.005}
    steppers: list[EpochStepper] = []
    for model, variant in [("neurosql", v) for v in variants] + [(m, "default") for m in models]:
        cell = {"model": model, "variant": variant, "backbone": "conv", "latent_size": 16, "seed": seed,
                "conditional": False}
        loader = train_loader(Dataset(items), 64, seed=seed)
        built = build_model(cell, data, loader, epochs, torch.device(device), settings)
        name = f"neurosql {variant}" if model == "neurosql" else model
        steppers.append(EpochStepper(name, built["trainer"], built["assignment"]))
    for epoch in range(epochs):
        order = steppers[epoch % len(steppers):] + steppers[: epoch % len(steppers)]
        for s in order:
            s.step()
            last = s.epochs[-1]
            log(f"[{dataset} {size} px] epoch {epoch + 1} {s.name}: {last['seconds']:.2f} s"
                + (f" (assignment {last['assign_s']:.2f} s)" if last["assignments"] else ""))
    return [s.summary() for s in steppers]


def _parts(s: dict[str, Any]) -> str:
    """``G(Q) / cost / solve / other`` seconds of one assignment and their percentages."""
    other = max(s["assign_med"] - s["decode_med"] - s["cost_med"] - s["solve_med"], 0.0)
    parts = (s["decode_med"], s["cost_med"], s["solve_med"], other)
    return (" / ".join(f"{p:.2f}" for p in parts) + " ("
            + " / ".join(f"{100 * p / s['assign_med']:.0f}" for p in parts) + "%)")


def table(dataset: str, size: int, n: int, summaries: list[dict[str, Any]]) -> str:
    """The markdown tables of one size: per model, then NeuroSQL with the pooled regression estimate."""
    vae = next((s for s in summaries if s["name"] == "vae"), None)
    rows = []
    for s in summaries:
        neuro = s["name"].startswith("neurosql") and s["assign_med"] > 0
        rows.append([
            s["name"], f"{s['s_epoch_iter']:.2f}", f"{s['s_epoch_iter'] / vae['s_epoch_iter']:.2f}" if vae else "-",
            f"{s['s_epoch_med']:.2f} ({s['s_epoch_min']:.2f})",
            f"{s['s_epoch_med'] / vae['s_epoch_med']:.2f}" if vae else "-", f"{s['regress_iter']:.2f}",
            f"{s['assign_med']:.2f} x {s['assign_rate']:.2f}" if neuro else "-",
            f"{100 * s['share_iter']:.0f}%" if neuro else "-", _parts(s) if neuro else "-",
            ", ".join(f"{100 * m:.0f}" for m in s["moved"]) if neuro else "-",
            f"{s['peak_mib']:.0f}", f"{s['growth_mib']:.0f}",
            "-" if s["cuda_peak_mib"] != s["cuda_peak_mib"] else f"{s['cuda_peak_mib']:.0f}",
        ])
    headers = ["model", "s / epoch", "/ VAE", "s / epoch: epoch median (min)", "/ VAE (epoch median)",
               "regression s / epoch", "assignment s x per epoch", "assignment share",
               "G(Q) / cost / solve / other s per assignment (%)", "codes moved per assignment (%)", "peak RSS MiB",
               "epoch growth MiB", "peak CUDA MiB"]
    out = f"### {dataset}, {size} x {size}, n = {n}\n\n" + markdown_table(headers, rows)
    neuros = [s for s in summaries if s["name"].startswith("neurosql")]
    if len(neuros) > 1 and vae:
        # every NeuroSQL variant runs the same regression (same network, batches and step): pooling their
        # iterations halves the noise of its estimate; the variants differ only in the assignment term
        pooled = statistics.median([t for s in neuros for t in s["iteration_times"]]) * neuros[0]["iterations_per_epoch"]
        pooled_rows = []
        for s in neuros:
            total = pooled + s["assign_rate"] * s["assign_med"]
            pooled_rows.append([s["name"], f"{pooled:.2f}", f"{total:.2f}", f"{total / vae['s_epoch_iter']:.2f}",
                                f"{100 * s['assign_rate'] * s['assign_med'] / total:.0f}%"])
        out += ("\n\nWith the regression estimated from the iterations of all NeuroSQL variants pooled (the same "
                "computation in every variant):\n\n" + markdown_table(
                    ["variant", "regression s / epoch (pooled)", "s / epoch", "/ VAE", "assignment share"],
                    pooled_rows))
    return out


def main(argv: list[str] | None = None) -> None:
    from monai_neurosql.benchmark.cells import NEUROSQL_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "demo"])
    parser.add_argument("--demo-scale", type=int, default=8, help="demo subjects per class x this (8: 2560 slices)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    parser.add_argument("--n", type=int, default=2000, help="training images")
    parser.add_argument("--n-128", type=int, default=1000, help="training images at 128 px and above")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model (the repeats of the median)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(NEUROSQL_VARIANTS),
                        help="NeuroSQL variants (monai_neurosql.benchmark.cells.NEUROSQL_VARIANTS)")
    parser.add_argument("--models", nargs="*", default=["vae", "gan"], choices=["vae", "gan"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (gpu_check.sh runs it on CUDA at 128 px)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--json", default=None, help="also write the summaries here")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 28 px, n = 128, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.n, args.n_128, args.epochs = [28], 128, 128, 2
    torch.set_num_threads(args.threads)
    print(f"# Epoch time side by side: NeuroSQL variants vs VAE vs GAN ({args.dataset}, {args.device})\n")
    print(f"- before: {conditions()}")
    print(f"- ConvGenerator (256, 128, 64, 32), latent 16, batch 64, each model's optimizer as in "
          f"`python -m monai_neurosql.benchmark`, {args.epochs} epochs per model, epochs interleaved across models "
          "(rotating order) in one process. s / epoch = median iteration time (batch fetch + step, over all the "
          "model's iterations) x iterations per epoch, plus for NeuroSQL the median assignment x assignments per "
          "epoch (1 / K); the median (min) over whole epochs beside it")
    described = [f"{v}: {NEUROSQL_VARIANTS[v] or 'package defaults'}" for v in args.variants]
    print(f"- NeuroSQL variants: {', '.join(described)}\n")
    results = []
    for size in args.sizes:
        n = args.n if size < 128 else args.n_128
        summaries = run_size(args.dataset, size, n, args.epochs, args.variants, args.models, args.seed,
                             args.demo_scale, args.device)
        results.append({"dataset": args.dataset, "size": size, "n": n, "conditions": conditions(),
                        "summaries": [{k: v for k, v in s.items() if k != "iteration_times"} for s in summaries]})
        print(table(args.dataset, size, n, summaries) + "\n", flush=True)
        print(f"- after {size} px: {conditions()}\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

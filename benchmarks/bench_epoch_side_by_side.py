"""NeuroSQL vs VAE vs GAN, side by side in one process: seconds per epoch, the assignment's share, peak memory.

All models train on the same images with the same backbone (``ConvGenerator``, widths ``(256, 128, 64, 32)``,
latent 16; the VAE adds its MLP encoder, the GAN its discriminator), batch 64, AdamW + cosine + gradient
clipping as in ``python -m monai_neurosql.benchmark``. Their epochs are interleaved: epoch 1 of every model, then
epoch 2 of every model (the order rotates each round), so that the other load on a shared machine hits every
model alike; the tables report the median over epochs (and the minimum) and ratios measured within the run.

NeuroSQL's epoch splits into regression and assignment. Its s / epoch is
``median regression epoch + median assignment x assignments per epoch`` (``1 / K`` for an assignment every K
epochs, whatever the run's length; an adaptive schedule is counted as it ran), where the regression epoch is
estimated two ways: the median iteration time (over all of the model's iterations in the interleaved run, robust to
minute-scale load swings) times the iterations per epoch, and the median over whole epochs. Its
assignment share is the second term over the sum, and the parts of one assignment are ``G(Q)`` (decoding the
lattice), the cost matrix, the solve and the rest (collecting the images on the first pass, the update).

Several NeuroSQL variants run in the same interleaving, so "before" and "after" compare within one run. A variant
is ``name:key=value,...``; keys the package's ``QuantileAssignmentHandler`` takes (``cost``, ``every``,
``method``, ``momentum``) run through it; the prototype levers (``pool``, ``prune``, ``bound``,
``bound_pool``, ``min_moved``, ``max_every``) run through the prototype handler of
``bench_assignment_levers.py``. Default variants: ``before:cost=ssim_l1,every=2`` (today's default: exact
full-resolution SSIM+L1 every 2 epochs) and ``after:cost=l2,every=2``.

Peak memory: before each model's epoch the heap is trimmed and the process's peak RSS reset (``clear_refs``);
"peak RSS" is the process's peak during that model's epochs (it holds every model and the data), "epoch growth"
the peak minus the RSS at the epoch's start (the epoch's working memory).

Usage (from the repository root)::

    python benchmarks/bench_epoch_side_by_side.py --dataset fashion-mnist --sizes 28 64 --n 2000 --epochs 4
    python benchmarks/bench_epoch_side_by_side.py --dataset fashion-mnist --sizes 128 --n 1000 --epochs 4
    python benchmarks/bench_epoch_side_by_side.py --dataset demo --sizes 64 128 --n 1000 \\
        --variant before:cost=ssim_l1,every=2 --variant after:cost=l2,every=2 --variant lowres:pool=2
    python benchmarks/bench_epoch_side_by_side.py --quick      # tiny smoke run (~1 minute)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, markdown_table
from bench_assignment_levers import (
    CONV_CHANNELS,
    LEARNING_RATES,
    conditions,
    indexed_dataset,
    load_images,
    make_generator,
    neurosql_trainer,
    parse_spec,
    release_memory,
    reset_peak_rss,
    rss_mib,
)

DEFAULT_VARIANTS = ["before:cost=ssim_l1,every=2", "after:cost=l2,every=2"]


def baseline_trainer(model: str, images: torch.Tensor, size: int, epochs: int, seed: int, latent: int = 16,
                     batch_size: int = 64):
    """The VAE or GAN trainer on the shared backbone, built as ``monai_neurosql.benchmark`` builds it."""
    from monai.handlers import LrScheduleHandler

    from monai_neurosql.baselines import VAE, Discriminator, GANTrainer, MLPEncoder, VAETrainer
    from monai_neurosql.data import train_loader

    loader = train_loader(indexed_dataset(images), batch_size, seed=seed)
    steps = epochs * len(loader)

    def schedule(optimizer: torch.optim.Optimizer) -> LrScheduleHandler:
        return LrScheduleHandler(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
                                 epoch_level=False, print_lr=False)

    generator = make_generator(size, latent, seed)
    lr = LEARNING_RATES[model]
    if model == "vae":
        vae = VAE(generator, MLPEncoder(tuple(images.shape[1:]), latent))
        optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
        return VAETrainer("cpu", epochs, loader, vae, optimizer, train_handlers=[schedule(optimizer)])
    if model == "gan":
        disc = Discriminator(2, images.shape[1])
        g_opt = torch.optim.AdamW(generator.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
        return GANTrainer("cpu", epochs, loader, generator, disc, g_opt, d_opt,
                          train_handlers=[schedule(g_opt), schedule(d_opt)])
    raise ValueError(f"model must be 'vae' or 'gan', got {model!r}.")


class EpochStepper:
    """Runs an ignite/MONAI trainer one epoch per call (``interrupt`` at the epoch's end, ``run`` resumes)."""

    def __init__(self, name: str, trainer: Any, assignment: Any = None, rate: float | None = None) -> None:
        from ignite.engine import Events

        self.name, self.trainer, self.assignment = name, trainer, assignment
        self.rate = rate  # assignments per epoch in steady state (1 / K); None: as counted in this run
        # registered after the trainer's own handlers, so the assignment of that epoch runs before the interrupt
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._pause)
        # per-iteration times (batch fetch + step): their median over the whole interleaved run is far less
        # sensitive to minute-scale load swings on a shared machine than a median over a few epochs
        self.iterations: list[float] = []
        self._iter_start = 0.0
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._iteration_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        self.epochs: list[dict[str, float]] = []

    def _iteration_started(self, engine: Any) -> None:
        self._iter_start = time.perf_counter()

    def _iteration_completed(self, engine: Any) -> None:
        self.iterations.append(time.perf_counter() - self._iter_start)

    @staticmethod
    def _pause(engine: Any) -> None:
        if engine.state.epoch < engine.state.max_epochs:  # the last epoch ends the run normally
            engine.interrupt()

    def step(self) -> None:
        release_memory()
        peak_reset = reset_peak_rss()
        rss0 = rss_mib()
        seen = len(self.assignment.history) if self.assignment is not None else 0
        start = time.perf_counter()
        self.trainer.run()
        seconds = time.perf_counter() - start
        new = self.assignment.history[seen:] if self.assignment is not None else []
        assign = sum(h["seconds"] for h in new)
        self.epochs.append({
            "seconds": seconds, "assign_s": assign, "regress_s": seconds - assign, "assignments": len(new),
            "decode_s": sum(h["decode_seconds"] for h in new), "cost_s": sum(h["cost_seconds"] for h in new),
            "solve_s": sum(h["solve_seconds"] for h in new),
            "moved": [h["moved"] for h in new],
            "peak_mib": rss_mib("VmHWM") if peak_reset else float("nan"), "rss0_mib": rss0,
        })

    def summary(self) -> dict[str, Any]:
        e = self.epochs
        reg = [x["regress_s"] for x in e]
        assigns = [x for x in e if x["assignments"]]
        per_assign = [x["assign_s"] / x["assignments"] for x in assigns]
        rate = self.rate if self.rate is not None else sum(x["assignments"] for x in e) / len(e)

        def med(key: str) -> float:
            vals = [x[key] / x["assignments"] for x in assigns]
            return statistics.median(vals) if vals else 0.0

        assign_med = statistics.median(per_assign) if per_assign else 0.0
        assign_min = min(per_assign) if per_assign else 0.0
        s_med = statistics.median(reg) + rate * assign_med
        s_min = min(reg) + rate * assign_min
        per_epoch_iters = len(self.iterations) / len(e)
        reg_iter = statistics.median(self.iterations) * per_epoch_iters
        s_iter = reg_iter + rate * assign_med
        return {
            "name": self.name, "epochs": len(e), "regress_med": statistics.median(reg), "regress_min": min(reg),
            "assign_med": assign_med, "assign_rate": rate, "s_epoch_med": s_med, "s_epoch_min": s_min,
            "regress_iter": reg_iter, "s_epoch_iter": s_iter, "iterations": len(self.iterations),
            "iteration_times": list(self.iterations), "iterations_per_epoch": per_epoch_iters,
            "share": rate * assign_med / s_med if s_med else 0.0,
            "share_iter": rate * assign_med / s_iter if s_iter else 0.0,
            "decode_med": med("decode_s"), "cost_med": med("cost_s"), "solve_med": med("solve_s"),
            "mean_wall": sum(x["seconds"] for x in e) / len(e),
            "peak_mib": max(x["peak_mib"] for x in e),
            "growth_mib": max(x["peak_mib"] - x["rss0_mib"] for x in e),
            "moved": [m for x in e for m in x["moved"]],
        }


def run_size(dataset: str, size: int, n: int, epochs: int, variants: list[tuple[str, dict]], models: list[str],
             seed: int) -> list[dict[str, Any]]:
    """Build every model on the same images, interleave their epochs, return one summary per model."""
    images, labels = load_images(dataset, n, size)
    steppers: list[EpochStepper] = []
    for name, lever in variants:
        trainer, handler = neurosql_trainer(images, labels, size, epochs, seed, lever)
        # a fixed schedule assigns every K epochs in steady state, whatever the run's length; an adaptive one
        # (min_moved) is counted as it ran
        rate = None if lever.get("min_moved") else 1.0 / int(lever.get("every", 2))
        steppers.append(EpochStepper(f"neurosql {name}", trainer, handler, rate))
    for model in models:
        steppers.append(EpochStepper(model, baseline_trainer(model, images, size, epochs, seed)))
    for epoch in range(epochs):
        order = steppers[epoch % len(steppers):] + steppers[: epoch % len(steppers)]
        for s in order:
            s.step()
            last = s.epochs[-1]
            log(f"[{dataset} {size} px] epoch {epoch + 1} {s.name}: {last['seconds']:.2f} s"
                + (f" (assignment {last['assign_s']:.2f} s)" if last["assignments"] else ""))
    return [s.summary() for s in steppers]


def table(dataset: str, size: int, n: int, summaries: list[dict[str, Any]]) -> str:
    vae = next((s for s in summaries if s["name"] == "vae"), None)
    rows = []
    for s in summaries:
        neuro = s["name"].startswith("neurosql")
        ratio = f"{s['s_epoch_med'] / vae['s_epoch_med']:.2f}" if vae else "-"
        ratio_min = f"{s['s_epoch_min'] / vae['s_epoch_min']:.2f}" if vae else "-"
        ratio_iter = f"{s['s_epoch_iter'] / vae['s_epoch_iter']:.2f}" if vae else "-"
        parts = "-"
        if neuro and s["assign_med"] > 0:
            other = s["assign_med"] - s["decode_med"] - s["cost_med"] - s["solve_med"]
            parts = (f"{s['decode_med']:.2f} / {s['cost_med']:.2f} / {s['solve_med']:.2f} / {max(other, 0):.2f} "
                     f"({100 * s['decode_med'] / s['assign_med']:.0f} / {100 * s['cost_med'] / s['assign_med']:.0f} / "
                     f"{100 * s['solve_med'] / s['assign_med']:.0f} / {100 * max(other, 0) / s['assign_med']:.0f}%)")
        moved = ", ".join(f"{100 * m:.0f}" for m in s["moved"]) if neuro else "-"
        rows.append([
            s["name"], f"{s['s_epoch_iter']:.2f}", ratio_iter,
            f"{s['s_epoch_med']:.2f} ({s['s_epoch_min']:.2f})", f"{ratio} ({ratio_min})",
            f"{s['regress_iter']:.2f}; {s['regress_med']:.2f}",
            f"{s['assign_med']:.2f} x {s['assign_rate']:.2f}" if neuro else "-",
            f"{100 * s['share_iter']:.0f}%; {100 * s['share']:.0f}%" if neuro else "-", parts, moved,
            f"{s['peak_mib']:.0f}", f"{s['growth_mib']:.0f}",
        ])
    pooled_rows = []
    neuros = [s for s in summaries if s["name"].startswith("neurosql")]
    if len(neuros) > 1 and vae:
        # every NeuroSQL variant runs the same regression (same network, batches and step): pooling their iterations
        # halves the noise of its estimate; the variants differ only in the assignment term
        pooled = statistics.median([t for s in neuros for t in s["iteration_times"]]) * neuros[0]["iterations_per_epoch"]
        for s in neuros:
            total = pooled + s["assign_rate"] * s["assign_med"]
            pooled_rows.append([s["name"], f"{pooled:.2f}", f"{total:.2f}", f"{total / vae['s_epoch_iter']:.2f}",
                                f"{100 * s['assign_rate'] * s['assign_med'] / total:.0f}%"])
    headers = ["model", "s / epoch (iteration median)", "/ VAE", "s / epoch: epoch median (min)",
               "/ VAE: median (min)", "regression s / epoch: iteration median x iterations; epoch median",
               "assignment s x per epoch", "assignment share (iteration; epoch based)",
               "G(Q) / cost / solve / other s per assignment (%)", "codes moved per assignment (%)", "peak RSS MiB",
               "epoch growth MiB"]
    out = f"### {dataset}, {size} x {size}, n = {n}\n\n" + markdown_table(headers, rows)
    if pooled_rows:
        out += ("\n\nWith the regression estimated from the iterations of all NeuroSQL variants pooled (the same "
                "computation in every variant):\n\n" + markdown_table(
                    ["variant", "regression s / epoch (pooled)", "s / epoch", "/ VAE", "assignment share"], pooled_rows))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "demo"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    parser.add_argument("--n", type=int, default=2000, help="training images")
    parser.add_argument("--n-128", type=int, default=1000, help="training images at 128 px and above")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model (the repeats of the median)")
    parser.add_argument("--variant", action="append", default=None,
                        help=f"NeuroSQL variant name:key=value,... (repeatable; default {DEFAULT_VARIANTS})")
    parser.add_argument("--models", nargs="*", default=["vae", "gan"], choices=["vae", "gan"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--json", default=None, help="also write the summaries here")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 28 px, n = 128, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.n, args.n_128, args.epochs = [28], 128, 128, 2
    variants = [parse_spec(v) for v in (args.variant or DEFAULT_VARIANTS)]
    torch.set_num_threads(args.threads)
    print(f"# Epoch time side by side: NeuroSQL variants vs VAE vs GAN ({args.dataset})\n")
    print(f"- before: {conditions()}")
    print(f"- ConvGenerator {CONV_CHANNELS}, latent 16, batch 64, AdamW + cosine, {args.epochs} epochs per model, "
          "epochs interleaved across models (rotating order) in one process. Regression s / epoch two ways: the "
          "median iteration time (batch fetch + step, over all the model's iterations in the run) x iterations per "
          "epoch, and the median (min) over whole epochs; NeuroSQL adds median assignment x assignments per epoch")
    print(f"- variants: {', '.join(f'{n}: {v}' for n, v in variants)}\n")
    results = []
    for size in args.sizes:
        n = args.n if size < 128 else args.n_128
        summaries = run_size(args.dataset, size, n, args.epochs, variants, args.models, args.seed)
        results.append({"dataset": args.dataset, "size": size, "n": n, "summaries": summaries})
        print(table(args.dataset, size, n, summaries) + "\n", flush=True)
    print(f"- after: {conditions()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

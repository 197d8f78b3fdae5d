"""GPU check: the hot paths on CUDA, side by side with the CPU, in one short run (a few minutes).

Prints markdown tables:

1. ``pairwise_cost`` (SSIM+L1) on CUDA vs CPU: pairs/s at 64x64 and 128x128, max difference.
2. Assignment of an n x n real-image cost matrix: CPU exact (``hungarian``, including the device->host copy) vs
   the CUDA auction (``auction``): seconds and gap to the exact optimum.
3. One training iteration (ConvGenerator, batch 64, 64x64) on CUDA with and without AMP vs CPU, and whether any
   host round trip happens inside the regression step (a CUDA sync counter around the step).
4. The full assignment at 128 x 128 (issue 13), one :func:`~monai_neurosql.assignment.assign_codes` per setting on
   the same generator and images: the paper's SSIM+L1 cost vs the default L2 cost (with TF32 matmuls allowed and
   not), and ``G(Q)`` under bfloat16 autocast (a lever not in the package: measured here first), with the parts
   (``G(Q)`` / cost / solve) and how many images each gives the same lattice point as the exact SSIM+L1 optimum.

``gpu_check.sh`` then runs ``bench_epoch_side_by_side.py`` on CUDA at 128 px (s / epoch of NeuroSQL paper setting
vs defaults vs VAE vs GAN, and the assignment share).

Usage: ``bash benchmarks/gpu_check.sh`` (or ``python benchmarks/gpu_check.py``);
``python benchmarks/gpu_check.py --device cpu --quick`` runs every section on tiny sizes on the CPU (a smoke test
of the script, no GPU numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> tuple[float, Any]:
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


def cost_table(device: torch.device, quick: bool) -> None:
    """Section 1: ``pairwise_cost`` (SSIM+L1) pairs/s on the CPU and on ``device``."""
    from monai_neurosql import pairwise_cost

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    print(f"## pairwise_cost (ssim_l1)\n\n| image | m x k | CPU pairs/s | {device.type} pairs/s | ratio | max diff |\n"
          "|---|---|---|---|---|---|")
    sizes = ((16, 8, 16), (32, 8, 16)) if quick else ((64, 256, 2048), (128, 128, 1024))
    for size, n_cpu, n_dev in sizes:
        x = torch.rand(n_dev, 1, size, size, generator=g)
        y = torch.rand(n_dev, 1, size, size, generator=g)
        x_cpu, y_cpu = x[:n_cpu], y[:n_cpu]
        t_cpu, c_cpu = _timed(lambda a=x_cpu, b=y_cpu: pairwise_cost(a, b), cpu, repeats=1)
        xd, yd = x.to(device), y.to(device)
        pairwise_cost(xd[:8], yd[:8])  # warm-up
        t_dev, c_dev = _timed(lambda a=xd, b=yd: pairwise_cost(a, b), device)
        diff = (c_dev[:n_cpu, :n_cpu].cpu() - c_cpu).abs().max().item()
        cpu_rate, dev_rate = n_cpu * n_cpu / t_cpu, n_dev * n_dev / t_dev
        print(f"| {size}x{size} | {n_dev} x {n_dev} | {cpu_rate:,.0f} | {dev_rate:,.0f} | {dev_rate / cpu_rate:.0f}x | "
              f"{diff:.1e} |")


def solver_table(device: torch.device, quick: bool) -> None:
    """Section 2: the exact CPU solve (copy included) vs the auction on ``device``."""
    from monai_neurosql import pairwise_cost, solve_assignment

    g = torch.Generator().manual_seed(1)
    print("\n## assignment (real SSIM+L1 costs of random smooth images)\n\n| n | CPU exact s (incl. copy) | "
          f"{device.type} auction s | auction gap % |\n|---|---|---|---|")
    for n in (32, 64) if quick else (1024, 4096):
        low = torch.rand(2 * n, 1, 8, 8, generator=g)
        imgs = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).to(device)
        cost = pairwise_cost(imgs[:n], imgs[n:])
        t_cpu, col = _timed(lambda c=cost: solve_assignment(c, "hungarian"), device, repeats=1)
        t_auc, col_a = _timed(lambda c=cost: solve_assignment(c, "auction"), device, repeats=1)
        c = cost.double()
        opt = c[torch.arange(n, device=device), col.to(device)].sum().item()
        got = c[torch.arange(n, device=device), col_a.to(device)].sum().item()
        print(f"| {n} | {t_cpu:.2f} | {t_auc:.2f} | {100 * (got - opt) / opt:.2g} |")


def _count_syncs(step: Callable[[], Any]) -> str:
    """CUDA synchronizations inside one call of ``step`` (``torch.cuda.set_sync_debug_mode`` warnings)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return str(sum("synchroniz" in str(w.message) for w in caught))


def iteration_table(device: torch.device, quick: bool) -> None:
    """Section 3: one regression iteration on the CPU and on ``device`` (with and without AMP on CUDA)."""
    from monai_neurosql import SSIML1Loss
    from monai_neurosql.networks import ConvGenerator

    size, batch = (16, 8) if quick else (64, 64)
    cpu = torch.device("cpu")
    print(f"\n## one training iteration, ConvGenerator, batch {batch}, {size}x{size}\n\n| device | ms / iteration | "
          "CUDA syncs in the step |\n|---|---|---|")
    runs = [(cpu, False)] + ([(device, False), (device, True)] if device.type == "cuda" else [])
    for dev, amp in runs:
        torch.manual_seed(0)
        net = ConvGenerator(2, 16, spatial_size=size).to(dev)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        scaler = torch.amp.GradScaler("cuda") if amp else None
        z, x = torch.randn(batch, 16, device=dev), torch.rand(batch, 1, size, size, device=dev)
        loss_fn = SSIML1Loss(2)

        def step(net=net, opt=opt, scaler=scaler, z=z, x=x, loss_fn=loss_fn, dev=dev, amp=amp) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, enabled=amp):
                loss = loss_fn(net(z).float(), x)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            return loss

        step()
        syncs = _count_syncs(step) if dev.type == "cuda" else "-"
        t, _ = _timed(step, dev, repeats=5)
        print(f"| {dev.type}{' + AMP' if amp else ''} | {1000 * t:.1f} | {syncs} |")


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


class _Bf16Decode(torch.nn.Module):
    """The generator under bfloat16 autocast, outputs back in float32 (the ``G(Q)`` lever measured here)."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=torch.bfloat16):
            return self.generator(z, labels).float()


def assignment_table(device: torch.device, quick: bool) -> None:
    """Section 4: one full assignment at 128 px per setting: time, parts, agreement with the exact SSIM+L1 optimum.

    The generator is trained for a few hundred steps on the images first (an untrained one decodes every code to
    nearly the same image, which makes any cost agree), then every setting assigns the same images against the
    same lattice on a copy of the same bank.
    """
    import copy

    from monai_neurosql import LatentBank, SSIML1Loss
    from monai_neurosql.assignment import assign_codes
    from monai_neurosql.networks import ConvGenerator

    size, n, steps = (32, 64, 20) if quick else (128, 2048, 300)
    g = torch.Generator().manual_seed(2)
    low = torch.rand(n, 1, 8, 8, generator=g)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    images = images.clamp(0, 1).to(device)
    torch.manual_seed(0)
    net = ConvGenerator(2, 16, spatial_size=size, channels=(256, 128, 64, 32)).to(device)  # the benchmark's
    bank = LatentBank.create(n, 16, seed=0).to(device)
    opt, loss_fn = torch.optim.AdamW(net.parameters(), 2e-3), SSIML1Loss(2)
    for i in range(steps):  # a short regression on the bank's (random) codes: distinct outputs per code
        idx = torch.randint(0, n, (64,), generator=torch.Generator().manual_seed(i)).to(device)
        opt.zero_grad(set_to_none=True)
        loss_fn(net(bank.codes[idx]), images[idx]).backward()
        opt.step()
    net.eval()
    settings = [
        ("paper: ssim_l1", net, {"cost": "ssim_l1"}, False),
        ("default: l2", net, {}, False),
        ("default: l2, TF32 matmuls", net, {}, True),
        ("default: l2, G(Q) in bfloat16", _Bf16Decode(net), {}, False),
    ]
    print(f"\n## full assignment at {size}x{size}, n = {n} (issue 13: paper setting vs defaults)\n\n| setting | s | "
          "G(Q) s | cost s | solve s | same point as exact SSIM+L1 (%) | its SSIM+L1 cost excess (%) |\n"
          "|---|---|---|---|---|---|---|")
    exact = None
    for label, generator, extra, tf32 in settings:
        trial = copy.deepcopy(bank)
        assign_codes(generator, copy.deepcopy(bank), images, settings={"momentum": 1.0, **extra})  # warm-up
        with _tf32(tf32):
            if device.type == "cuda":
                torch.cuda.synchronize()
            stats = assign_codes(generator, trial, images, settings={"momentum": 1.0, **extra})
        col = trial.assignment.clone()
        if exact is None:
            exact = (col, stats["cost"])
        same = float((col == exact[0]).double().mean())
        # the exact SSIM+L1 cost of this assignment: re-score its pairs under the paper's cost
        check = copy.deepcopy(bank)
        check.assignment.copy_(col)
        rescored = _matched_ssim_l1(net, check, images)
        print(f"| {label} | {stats['seconds']:.3g} | {stats['decode_seconds']:.3g} | {stats['cost_seconds']:.3g} | "
              f"{stats['solve_seconds']:.3g} | {100 * same:.1f} | {100 * (rescored / exact[1] - 1):.3g} |")


def _matched_ssim_l1(generator: torch.nn.Module, bank: Any, images: torch.Tensor, block: int = 64) -> float:
    """Mean SSIM+L1 cost of each image against its assigned lattice point's decoded image (diagonal blocks of
    ``pairwise_cost``)."""
    from monai_neurosql import pairwise_cost
    from monai_neurosql.generate import decode

    decoded = decode(generator, bank.lattice_points[bank.assignment])
    costs = [pairwise_cost(images[i : i + block], decoded[i : i + block], kind="ssim_l1").diagonal()
             for i in range(0, len(images), block)]
    return float(torch.cat(costs).double().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of the script, also on CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (the CUDA code paths are exercised on CPU by the tests; "
              "--device cpu --quick smoke-tests this script).")
        sys.exit(0)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {name}, CPU threads {torch.get_num_threads()}\n")
    cost_table(device, args.quick)
    solver_table(device, args.quick)
    iteration_table(device, args.quick)
    assignment_table(device, args.quick)


if __name__ == "__main__":
    main()

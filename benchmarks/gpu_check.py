"""GPU check (issue: GPU readiness): the hot paths on CUDA, side by side with the CPU, in one short run (<5 min).

Prints markdown tables:

1. ``pairwise_cost`` (SSIM+L1) on CUDA vs CPU: pairs/s at 64x64 and 128x128, max difference.
2. Assignment of an n x n real-image cost matrix: CPU exact (``hungarian``, including the device->host copy) vs
   the CUDA auction (``auction``): seconds and gap to the exact optimum.
3. One training iteration (ConvGenerator, batch 64, 64x64) on CUDA with and without AMP vs CPU, and whether any
   host round trip happens inside the regression step (a CUDA sync counter around the step).

Usage: ``bash benchmarks/gpu_check.sh`` (or ``python benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch


def _timed(fn, device: torch.device, repeats: int = 3) -> tuple[float, object]:
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
    if not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (the CUDA code paths are exercised on CPU by the tests).")
        sys.exit(0)
    from monai_neurosql import SSIML1Loss, pairwise_cost, solve_assignment
    from monai_neurosql.networks import ConvGenerator

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CPU threads {torch.get_num_threads()}\n")
    g = torch.Generator().manual_seed(0)

    print("## pairwise_cost (ssim_l1)\n\n| image | m x k | CPU pairs/s | CUDA pairs/s | ratio | max diff |\n|---|---|---|---|---|---|")
    for size, n_cpu, n_gpu in ((64, 256, 2048), (128, 128, 1024)):
        x = torch.rand(n_gpu, 1, size, size, generator=g)
        y = torch.rand(n_gpu, 1, size, size, generator=g)
        t_cpu, c_cpu = _timed(lambda: pairwise_cost(x[:n_cpu], y[:n_cpu]), cpu, repeats=1)
        xg, yg = x.to(cuda), y.to(cuda)
        pairwise_cost(xg[:8], yg[:8])  # warm-up
        t_gpu, c_gpu = _timed(lambda: pairwise_cost(xg, yg), cuda)
        diff = (c_gpu[:n_cpu, :n_cpu].cpu() - c_cpu).abs().max().item()
        cpu_rate, gpu_rate = n_cpu * n_cpu / t_cpu, n_gpu * n_gpu / t_gpu
        print(f"| {size}x{size} | {n_gpu} x {n_gpu} | {cpu_rate:,.0f} | {gpu_rate:,.0f} | {gpu_rate / cpu_rate:.0f}x | "
              f"{diff:.1e} |")

    print("\n## assignment (real SSIM+L1 costs of random smooth images)\n\n| n | CPU exact s (incl. copy) | CUDA "
          "auction s | auction gap % |\n|---|---|---|---|")
    for n in (1024, 4096):
        low = torch.rand(2 * n, 1, 8, 8, generator=g)
        imgs = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).to(cuda)
        cost = pairwise_cost(imgs[:n], imgs[n:])
        t_cpu, col = _timed(lambda: solve_assignment(cost, "hungarian"), cuda, repeats=1)
        t_auc, col_a = _timed(lambda: solve_assignment(cost, "auction"), cuda, repeats=1)
        c = cost.double()
        opt = c[torch.arange(n, device=cuda), col].sum().item()
        got = c[torch.arange(n, device=cuda), col_a].sum().item()
        print(f"| {n} | {t_cpu:.2f} | {t_auc:.2f} | {100 * (got - opt) / opt:.2g} |")

    print("\n## one training iteration, ConvGenerator, batch 64, 64x64\n\n| device | ms / iteration | CUDA syncs in "
          "the step |\n|---|---|---|")
    for device, amp in ((cpu, False), (cuda, False), (cuda, True)):
        torch.manual_seed(0)
        net = ConvGenerator(2, 16, spatial_size=64).to(device)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        scaler = torch.amp.GradScaler("cuda") if amp else None
        z, x = torch.randn(64, 16, device=device), torch.rand(64, 1, 64, 64, device=device)
        loss_fn = SSIML1Loss(2)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
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
        syncs = "-"
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step()
            torch.cuda.set_sync_debug_mode(0)
            syncs = str(sum("synchroniz" in str(w.message) for w in caught))
        t, _ = _timed(step, device, repeats=5)
        print(f"| {device.type}{' + AMP' if amp else ''} | {1000 * t:.1f} | {syncs} |")


if __name__ == "__main__":
    main()

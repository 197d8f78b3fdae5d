"""At how many training steps do the DDPM baseline's samples become images? One command.

Usage::

    python -m monai_neurosql.benchmark.ddpm_budget --dataset fashion-mnist --steps 500 1000 2000 4000 \\
        --output runs/ddpm_budget_fmnist

Trains the benchmark's DDPM (the matched ``DiffusionModelUNet``, Adam 1e-3, batch 64, T = 1000) once, and at each
step count samples ``--num-samples`` images (``--sampling-steps`` reverse steps) and scores them with KID in the
domain features against the test split, beside the controls' KID (unseen real images, blurred images, Gaussian
noise). Samples "are images" once their KID falls below the blurred control's. Writes ``ddpm_budget.md``, one grid
per step count and the training seconds, so the budget's cost on the machine can be read off.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from ignite.engine import Events
    from monai.data import Dataset

    from ..data import train_loader
    from ..metrics import (
        control_sets,
        extract_features,
        kernel_distance,
        load_domain_encoder,
        save_domain_encoder,
        train_domain_encoder,
    )
    from ..visualize import save_grid_png
    from .cells import build_model
    from .data import load_benchmark_data

    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark.ddpm_budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--demo-scale", type=int, default=1)
    parser.add_argument("--csv-path", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--latent-size", type=int, default=16, help="the generator whose parameter count is matched")
    parser.add_argument("--steps", nargs="+", type=int, default=[500, 1000, 2000, 4000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--sampling-steps", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--domain-encoder", default=None, help="reuse this domain_encoder.pt")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="runs/ddpm_budget")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, csv_path=args.csv_path,
                               demo_scale=args.demo_scale)
    encoder_path = Path(args.domain_encoder) if args.domain_encoder else output / "domain_encoder.pt"
    if not encoder_path.is_file():
        save_domain_encoder(train_domain_encoder(data["train_images"], data["train_labels"]), encoder_path)
    encoder = load_domain_encoder(encoder_path)
    num = min(args.num_samples, len(data["reference_images"]))
    reference = extract_features(encoder, data["reference_images"][:num])

    def kid(images: torch.Tensor) -> dict[str, float]:
        return kernel_distance(reference, extract_features(encoder, images))

    controls = control_sets(data["train_images"], data["unseen_images"], num, seed=0)
    control_kid = {name: kid(controls[name]) for name in ("real_unseen", "blurred", "noise")}
    images = data["train_images"]
    items = [{"image": images[i], "index": i, "label": int(data["train_labels"][i])} for i in range(len(images))]
    loader = train_loader(Dataset(items), args.batch_size, seed=0)
    epochs = -(-max(args.steps) // len(loader))
    cell = {"model": "ddpm", "variant": "default", "backbone": "conv", "latent_size": args.latent_size,
            "conditional": False, "seed": 0}
    built = build_model(cell, data, loader, epochs, torch.device("cpu"),
                        {"ddpm_timesteps": args.timesteps, "ddpm_sampling_steps": args.sampling_steps})
    trainer, rows = built["trainer"], []
    clock = {"train": 0.0, "start": time.perf_counter()}

    def milestone(engine) -> None:
        if engine.state.iteration not in args.steps:
            return
        clock["train"] += time.perf_counter() - clock["start"]
        start = time.perf_counter()
        fake = built["sampler"](num, 1000, None)
        sample_seconds = time.perf_counter() - start
        save_grid_png(fake[:64], output / f"ddpm_step{engine.state.iteration}.png", nrow=16, scale=2)
        rows.append({"steps": engine.state.iteration, "train_seconds": clock["train"],
                     "sample_seconds": sample_seconds, **kid(fake)})
        logger.info(f"{rows[-1]}")
        clock["start"] = time.perf_counter()
        if engine.state.iteration >= max(args.steps):
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, milestone)
    trainer.run()
    lines = [f"DDPM ({built['params']:,} parameters, T = {args.timesteps}, {args.sampling_steps} sampling steps) on "
             f"{data['name']}: {len(images)} training images, batch {args.batch_size}; KID (domain features) of {num} "
             f"samples vs {num} test images. Controls: " + ", ".join(
                 f"{k} {v['kid']:.4g} ± {v['kid_se']:.2g}" for k, v in control_kid.items()),
             "", "| steps | train s | s / step | sampling s | KID | KID SE | below blurred control |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['train_seconds']:.0f} | {r['train_seconds'] / r['steps']:.3f} | "
                     f"{r['sample_seconds']:.0f} | {r['kid']:.4g} | {r['kid_se']:.2g} | "
                     f"{'yes' if r['kid'] < control_kid['blurred']['kid'] else 'no'} |")
    (output / "ddpm_budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()

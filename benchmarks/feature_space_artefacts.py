"""Which kinds of damage does each feature space see? Graded blur, noise and a checkerboard artefact, beside the
models' samples, scored by KID in every feature space of a finished benchmark run.

A space trained for one task weighs blur and high-frequency artefacts in its own way, so two models with different
failure modes (NeuroSQL and the VAE blur, a GAN adds texture artefacts) can come out in opposite orders in two
spaces. This script shows how each space of a ``python -m monai_neurosql.benchmark`` output (``domain_encoder.pt``
and the cross-check ``domain_encoder_<kind>.pt``) ranks real training images damaged in known amounts, next to the
samples of each model (seed 0, ``epochs`` protocol), all against the same test images.

Usage (after the benchmark run, with the same data arguments)::

    python benchmarks/feature_space_artefacts.py --dataset fashion-mnist --output runs/bench_fmnist
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_run_arguments, load_run_encoders, log, markdown_table

BLURS = (1.0, 2.0)  # pixels; the control set's "blurred" is 1/8 of the image side
NOISES = (0.05, 0.1, 0.2, 0.3)  # standard deviation of added Gaussian noise (images in [0, 1])
CHECKER = 0.2  # amplitude of a +-1 checkerboard added on the object (pixels above 0.05)


def damaged_sets(train: torch.Tensor, unseen: torch.Tensor, num: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The control sets plus graded damage of the same real training images."""
    from monai_neurosql.metrics import blur, control_sets

    sets = control_sets(train, unseen, num, seed=seed)
    real = sets["real_train"]
    g = torch.Generator().manual_seed(seed + 1)
    out = {"real_unseen (floor)": sets["real_unseen"], "real_train (copies)": real}
    for sigma in BLURS:
        out[f"blur {sigma:g} px"] = blur(real, sigma)
    out[f"blurred control ({min(train.shape[2:]) / 8:g} px)"] = sets["blurred"]
    for std in NOISES:
        out[f"+ noise sd {std:g}"] = (real + std * torch.randn(real.shape, generator=g)).clamp(0.0, 1.0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in real.shape[2:]], indexing="ij")).sum(0) % 2
    out[f"+ checkerboard {CHECKER:g}"] = (real + CHECKER * (2.0 * grid - 1.0) * (real > 0.05)).clamp(0.0, 1.0)
    out["Gaussian noise control"] = sets["noise"]
    return out


def main(argv: list[str] | None = None) -> str:
    from monai_neurosql.benchmark.data import load_benchmark_data
    from monai_neurosql.metrics import extract_features, kernel_distance

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--num", type=int, default=2048, help="images per set (at most the test split)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, demo_scale=args.demo_scale)
    # the benchmark's own split: the same test images its tables were scored against
    reference = data["reference_images"]
    num = min(args.num, len(reference))
    encoders, names = load_run_encoders(output)
    sets = damaged_sets(data["train_images"], data["unseen_images"], num)
    with open(output / "results.csv", newline="") as f:
        for row in csv.DictReader(f):  # each model's seed-0 cell of the 'epochs' protocol, as results.csv names it
            name = f"model: {row['model']} {row['variant']} (seed 0)"
            samples = Path(row["cell_dir"]) / "samples.npz"
            if row["seed"] == "0" and row["protocol"] == "epochs" and name not in sets and samples.is_file():
                sets[name] = torch.from_numpy(np.load(samples)["images"]).float()
    reference_features = {k: extract_features(e, reference[:num]) for k, e in encoders.items()}
    rows = []
    for name, images in sets.items():
        row = {"set": name, "pixel MSE to the clean images": ""}
        if images.shape == sets["real_train (copies)"].shape and not name.startswith(("model", "real_unseen")):
            row["pixel MSE to the clean images"] = f"{float(((images - sets['real_train (copies)']) ** 2).mean()):.4f}"
        for key, encoder in encoders.items():
            kid = kernel_distance(reference_features[key][: len(images)], extract_features(encoder, images[:num]))
            row[f"KID {names[key]}"] = f"{kid['kid']:.3g} ± {kid['kid_se']:.2g}"
        rows.append(row)
        log(f"{name}: done")
    headers = list(rows[0])
    table = markdown_table(headers, [[r[h] for h in headers] for r in rows])
    print(f"\n{data['name']}: {num} images per set against {num} test images\n\n{table}")
    return table


if __name__ == "__main__":
    main()

"""Does adding synthetic images help a classifier trained on little real data? Table 2 asked as users ask it.

Usage::

    python -m monai_neurosql.benchmark.augmentation --dataset fashion-mnist --per-class 10 25 50 100 \\
        --seeds 0 1 2 --models neurosql vae gan ddpm --output runs/augmentation_fmnist

For each number of real images per class and each seed, the same real subset (drawn with the seed from the
training split) trains:

- ``real``: the classifier on the real images alone;
- ``real+classical``: the classifier on the real images with classical augmentation (MONAI's random affine:
  rotation +- 10 degrees, scale 0.9-1.1, shift +- 10%, and a random horizontal flip and intensity shift),
  the reference users already have;
- ``real+<model>``: a class-conditional generator of each model trained on *only those real images*, then the
  classifier on the real images plus ``--synthetic-per-class`` generated images per class.

Every classifier (MONAI's small ``Classifier`` CNN, AdamW) takes the same ``--clf-steps`` optimizer steps of
batch 64 whatever its training set size, and is tested on the real test split: accuracy and macro recall, mean
± std over seeds. Each generator trains ``--gen-steps`` steps with its benchmark settings. Writes
``augmentation.csv`` (resumable), ``augmentation.md`` and a sample grid per model and size (first seed).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import read_csv, write_csv

__all__ = ["balanced_subset", "classical_augmentation", "fit_classifier", "main"]

logger = logging.getLogger(__name__)

FIELDS = ["dataset", "per_class", "seed", "condition", "accuracy", "macro_recall", "macro_precision", "n_real",
          "n_synthetic", "gen_seconds", "clf_seconds"]


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of every class, drawn with ``seed``.

    Raises:
        ValueError: a class has fewer than ``per_class`` images.
    """
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(labels).tolist():
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} training images, fewer than --per-class {per_class}.")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
    return torch.cat(picks)


def classical_augmentation(spatial_size: Sequence[int], seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A per-image random augmentation (MONAI ``RandAffine``: rotation +- 10 degrees, scale 0.9-1.1, shift +- 10% of
    each side of ``spatial_size``; ``RandFlip``; ``RandShiftIntensity``), seeded."""
    from monai.transforms import Compose, RandAffine, RandFlip, RandShiftIntensity

    spatial_dims = len(spatial_size)
    rotate = (math.radians(10),) if spatial_dims == 2 else (math.radians(10),) * 3
    shift = tuple(0.1 * s for s in spatial_size)  # RandAffine's translate_range is in pixels
    transform = Compose([
        RandAffine(prob=1.0, rotate_range=rotate, scale_range=0.1, translate_range=shift, padding_mode="zeros"),
        RandFlip(prob=0.5, spatial_axis=spatial_dims - 1),
        RandShiftIntensity(offsets=0.05, prob=0.5),
    ]).set_random_state(seed=seed)

    def apply(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(transform(x)).float() for x in batch]).clamp(0.0, 1.0)

    return apply


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int, seed: int,
                   augment: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 64,
                   lr: float = 1e-3) -> torch.nn.Module:
    """MONAI's small ``Classifier`` CNN trained for ``steps`` AdamW steps on random batches (with replacement), the
    same budget whatever the training set size; ``augment`` is applied to every batch."""
    from monai.networks.nets import Classifier

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Classifier(in_shape=tuple(images.shape[1:]), classes=num_classes, channels=(16, 32, 64),
                         strides=(2, 2, 2), num_res_units=1)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        net.train()
        for _ in range(steps):
            idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=g)
            x = images[idx].float()
            if augment is not None:
                x = augment(x)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), labels[idx].long()).backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def _scores(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    from ..metrics import classification_scores

    predictions = torch.cat([net(images[i : i + 512].float()).argmax(1) for i in range(0, len(images), 512)])
    return classification_scores(predictions, labels, num_classes)


def _generator_samples(model: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int,
                       per_class: int, seed: int, latent: int, threads: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Train a class-conditional ``model`` on ``images`` only, for ``steps`` steps; ``per_class`` samples per class."""
    from monai.data import Dataset

    from ..data import train_loader
    from .cells import build_model

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))]
    loader = train_loader(Dataset(items), min(64, len(images)), seed=seed)
    epochs = max(1, math.ceil(steps / len(loader)))
    data = {"train_images": images, "train_labels": labels, "num_classes": num_classes}
    cell = {"model": model, "variant": "default", "backbone": "conv", "latent_size": latent, "conditional": True,
            "seed": seed}
    built = build_model(cell, data, loader, epochs, torch.device("cpu"), {"vae_beta": 0.005})
    start = time.perf_counter()
    built["trainer"].run()
    seconds = time.perf_counter() - start
    synthetic_labels = torch.arange(num_classes).repeat_interleave(per_class)
    return built["sampler"](len(synthetic_labels), 3000 + seed, synthetic_labels).float(), synthetic_labels, seconds


def _summary(rows: Sequence[dict]) -> str:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["condition"], int(r["per_class"]))].append(float(r["accuracy"]))
    sizes = sorted({k[1] for k in groups})
    order = ["real", "real+classical"] + sorted({k[0] for k in groups} - {"real", "real+classical"})
    lines = ["| condition | " + " | ".join(f"{s} / class" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for condition in order:
        cells = []
        for s in sizes:
            values = np.asarray(groups.get((condition, s), []))
            cells.append("-" if values.size == 0 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({values.size})"
                         if values.size > 1 else f"{values[0]:.3f} (1)")
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from ..visualize import save_grid_png
    from .cells import MODELS
    from .data import load_benchmark_data

    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark.augmentation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or a labelled MedMNIST .npz")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--per-class", nargs="+", type=int, default=[10, 25, 50, 100])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["neurosql", "vae", "gan", "ddpm"], choices=MODELS)
    parser.add_argument("--synthetic-per-class", type=int, default=200)
    parser.add_argument("--gen-steps", type=int, default=1500, help="optimizer steps of each generator")
    parser.add_argument("--clf-steps", type=int, default=600, help="optimizer steps of each classifier")
    parser.add_argument("--latent-size", type=int, default=16)
    parser.add_argument("--max-test", type=int, default=10000)
    parser.add_argument("--pool", type=int, default=10000, help="training images the subsets are drawn from")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="runs/augmentation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_benchmark_data(args.dataset, args.image_size, args.pool, output, max_reference=args.max_test)
    train, train_labels = data["train_images"], data["train_labels"]
    test, test_labels = data["reference_images"], data["reference_labels"]
    k = data["num_classes"]
    csv_path = output / "augmentation.csv"
    rows = read_csv(csv_path)
    done = {(int(r["per_class"]), int(r["seed"]), r["condition"]) for r in rows}

    def record(row: dict) -> None:
        rows.append(row)
        write_csv(csv_path, [row], FIELDS, append=True)  # whole file, renamed: a kill keeps the rows
        logger.info(f"{row['per_class']}/class seed {row['seed']} {row['condition']}: accuracy {row['accuracy']:.3f}")

    def classify(condition: str, per_class: int, seed: int, x: torch.Tensor, y: torch.Tensor, n_real: int,
                 aug=None, gen_seconds: float = 0.0) -> None:
        start = time.perf_counter()
        net = fit_classifier(x, y, k, args.clf_steps, seed=100 + seed, augment=aug)
        scores = _scores(net, test, test_labels, k)
        record({"dataset": data["name"], "per_class": per_class, "seed": seed, "condition": condition,
                "accuracy": scores["accuracy"], "macro_recall": scores["macro_recall"],
                "macro_precision": scores["macro_precision"], "n_real": n_real, "n_synthetic": len(x) - n_real,
                "gen_seconds": gen_seconds, "clf_seconds": time.perf_counter() - start})

    for per_class in args.per_class:
        for seed in args.seeds:
            idx = balanced_subset(train_labels, per_class, seed)
            x, y = train[idx], train_labels[idx]
            if (per_class, seed, "real") not in done:
                classify("real", per_class, seed, x, y, len(x))
            if (per_class, seed, "real+classical") not in done:
                classify("real+classical", per_class, seed, x, y, len(x),
                         aug=classical_augmentation(train.shape[2:], seed))
            for model in args.models:
                condition = f"real+{model}"
                if (per_class, seed, condition) in done:
                    continue
                fake, fake_labels, seconds = _generator_samples(model, x, y, k, args.gen_steps,
                                                                args.synthetic_per_class, seed, args.latent_size,
                                                                args.threads)
                if seed == args.seeds[0]:
                    order = torch.arange(len(fake)).view(k, -1)[:, :8].T.flatten()  # 8 rows of one sample per class
                    save_grid_png(fake[order], output / f"samples_{model}_{per_class}perclass.png", nrow=k, scale=2)
                classify(condition, per_class, seed, torch.cat([x, fake]), torch.cat([y, fake_labels]), len(x),
                         gen_seconds=seconds)
    table = _summary(rows)
    text = (f"Data: {data['name']}; classifier tested on {len(test)} real test images; {args.clf_steps} classifier "
            f"steps (batch 64); generators {args.gen_steps} steps, {args.synthetic_per_class} synthetic images per "
            f"class; accuracy mean ± std over seeds (number of seeds).\n\n{table}\n")
    (output / "augmentation.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()

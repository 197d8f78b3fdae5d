"""The paper's comparison in one command: NeuroSQL vs VAE, GAN and DDPM on the same backbone and budget.

Usage::

    python -m monai_neurosql.benchmark --dataset fashion-mnist --models neurosql vae gan ddpm \\
        --backbones conv --latent-sizes 4 16 32 --seeds 0 1 2 --epochs 20 --max-train 2000 --output runs/bench

``--dataset`` is ``fashion-mnist`` (Debian's dataset-fashion-mnist), ``demo`` (the embedded OASIS-like brain
slices), a MedMNIST ``.npz`` file, or an OASIS folder. Every cell (dataset x model x backbone x latent size x
seed x variant) trains in its own process (so peak memory is per cell), then samples ``--num-samples`` images
(sampled-z mode; DDPM with 100 steps) and scores them against held-out real images: proxy-FID, the paper's
SSIM over 50 real/fake pairs, MS-SSIM diversity, k-NN precision/recall, seconds per epoch, parameters, peak
memory; LPIPS and the Inception FID too when their pretrained weights are available locally. Results go to
``results.csv`` (one row per cell; an interrupted sweep resumes without redoing finished cells), ``results.md``
(mean +- std over seeds, the paper's Table 1/4 form) and sample grids (one per cell, plus side-by-side
comparisons of all models per backbone and latent size).

NeuroSQL variants reproduce the paper's ablations: ``--variants default l2 greedy minibatch`` (assignment cost
SSIM+L1 vs L2, exact vs greedy assignment, full batch vs mini-batch). ``--classifier`` adds the downstream
classifier of Table 2: class-conditional models, a small CNN trained only on synthetic images and tested on
real ones, plus real-only vs real+synthetic.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing as mp
import resource
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["main", "load_benchmark_data", "build_generator", "run_cell", "summarize", "peak_rss_mib", "scored_count",
           "MODELS", "BACKBONES"]

MODELS = ("neurosql", "vae", "gan", "ddpm")
BACKBONES = ("conv", "resnet", "film_unet")
VARIANTS = ("default", "l2", "greedy", "minibatch")
#: Per-model learning rates (AdamW); everything else in the budget is shared.
LEARNING_RATES = {"neurosql": 2e-3, "vae": 2e-3, "gan": 2e-4, "ddpm": 1e-3}
FIELDS = [
    "dataset", "model", "backbone", "latent_size", "seed", "variant", "conditional", "epochs", "n_train", "params",
    "sec_per_epoch", "train_seconds", "peak_rss_mb", "proxy_fid", "ssim", "ms_ssim", "ms_ssim_real", "precision",
    "recall", "lpips", "fid", "clf_accuracy", "clf_macro_precision", "clf_macro_recall", "real_only_accuracy",
    "real_plus_synthetic_accuracy", "grid",
]


# ---------------------------------------------------------------------------------------------------- data
def load_benchmark_data(dataset: str, image_size: int | None, max_train: int, work_dir: Path,
                        max_reference: int = 4096) -> dict[str, Any]:
    """Training images/labels (capped at ``max_train``) and held-out reference images/labels as tensors."""
    from monai.data import Dataset

    from .data import (
        array_transforms,
        fashion_mnist_to_npz,
        medmnist_records,
        prepare_oasis_split,
        slice_transforms,
    )

    if dataset == "fashion-mnist" or dataset.endswith(".npz"):
        path = fashion_mnist_to_npz(work_dir / "fashionmnist_medmnist.npz") if dataset == "fashion-mnist" else dataset
        split = medmnist_records(path)
        train_records, reference_records = split["training"][:max_train], split["test"][:max_reference]
        spatial_dims = split["training"][0]["image"].ndim - 1
        transform = array_transforms(image_size, spatial_dims=spatial_dims)
    else:
        split = prepare_oasis_split(None if dataset == "demo" else dataset, work_dir / "data", seed=0,
                                    demo_dir=work_dir / "demo_data")
        train_records = split["training"][:max_train]
        reference_records = (split["validation"] + split["test"])[:max_reference]
        transform = slice_transforms(image_size or 64)

    def tensors(records: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        ds = Dataset(list(records), transform)
        items = [ds[i] for i in range(len(ds))]
        images = torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items]).float()
        labels = torch.tensor([int(it["label"]) for it in items])
        return images, labels

    train_images, train_labels = tensors(train_records)
    reference_images, reference_labels = tensors(reference_records)
    return {"train_images": train_images, "train_labels": train_labels, "reference_images": reference_images,
            "reference_labels": reference_labels, "num_classes": int(max(train_labels.max(), reference_labels.max())) + 1}


# ---------------------------------------------------------------------------------------------------- models
def build_generator(backbone: str, spatial_dims: int, latent_size: int, out_channels: int, spatial_size,
                    num_classes: int | None = None) -> torch.nn.Module:
    """The shared generator backbones at the benchmark's (CPU-sized) widths."""
    from .networks import ConvGenerator, FiLMUNetGenerator, ResNetGenerator

    common = {"spatial_dims": spatial_dims, "latent_size": latent_size, "out_channels": out_channels,
              "spatial_size": spatial_size, "num_classes": num_classes}
    if backbone == "conv":
        return ConvGenerator(**common, channels=(256, 128, 64, 32))
    if backbone == "resnet":
        return ResNetGenerator(**common, channels=(128, 128, 64, 32))
    if backbone == "film_unet":
        return FiLMUNetGenerator(**common, channels=(32, 64, 128))
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}.")


def _trainer(cell: dict, data: dict, generator: torch.nn.Module, loader, n_epochs: int, device: torch.device):
    """The model's trainer and a ``sampler(num, seed, labels) -> images`` on the same budget."""
    from monai.data import Dataset
    from monai.handlers import LrScheduleHandler

    from .baselines import MLPEncoder, VAE, DDPMTrainer, Discriminator, GANTrainer, VAETrainer, matched_diffusion_unet
    from .data import assignment_loader
    from .engines import NeuroSQLTrainer
    from .generate import generate
    from .handlers import QuantileAssignmentHandler
    from .latent_bank import LatentBank
    from .networks import count_parameters

    model, lr, images = cell["model"], LEARNING_RATES[cell["model"]], data["train_images"]
    conditional = cell["conditional"]
    steps = n_epochs * len(loader)

    def schedule(optimizer):
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)

    if model == "neurosql":
        n = len(images)
        labels = data["train_labels"]
        bank = LatentBank.class_conditional(labels, cell["latent_size"], seed=cell["seed"]) if conditional else \
            LatentBank.create(n, cell["latent_size"], seed=cell["seed"])
        optimizer = torch.optim.AdamW(generator.parameters(), lr=lr, weight_decay=1e-4)
        variant = cell["variant"]
        items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(n)]
        handler = QuantileAssignmentHandler(
            assignment_loader(Dataset(items)) if variant != "minibatch" else None,
            mode="minibatch" if variant == "minibatch" else "full", every_n_epochs=2,
            settings={"method": "greedy" if variant == "greedy" else "hungarian",
                      "cost": "l2" if variant == "l2" else "ssim_l1"},
        )
        trainer = NeuroSQLTrainer(device, n_epochs, loader, generator, bank, optimizer,
                                  train_handlers=[schedule(optimizer), handler], seed=cell["seed"])
        return trainer, count_parameters(generator), lambda num, seed, lab: generate(
            generator, num, bank.lattice, seed=seed, labels=lab)
    if model == "vae":
        encoder = MLPEncoder(tuple(images.shape[1:]), cell["latent_size"],
                             num_classes=data["num_classes"] if conditional else None)
        vae = VAE(generator, encoder)
        optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
        trainer = VAETrainer(device, n_epochs, loader, vae, optimizer, train_handlers=[schedule(optimizer)])
        return trainer, count_parameters(vae), trainer.sample
    if model == "gan":
        disc = Discriminator(images.ndim - 2, images.shape[1], num_classes=data["num_classes"] if conditional else None)
        g_opt = torch.optim.AdamW(generator.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
        trainer = GANTrainer(device, n_epochs, loader, generator, disc, g_opt, d_opt,
                             train_handlers=[schedule(g_opt), schedule(d_opt)])
        return trainer, count_parameters(generator) + count_parameters(disc), trainer.sample
    if model == "ddpm":
        unet = matched_diffusion_unet(images.ndim - 2, images.shape[1], count_parameters(generator),
                                      num_classes=data["num_classes"] if conditional else None)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
        trainer = DDPMTrainer(device, n_epochs, loader, unet, optimizer, spatial_shape=tuple(images.shape[2:]),
                              in_channels=images.shape[1], train_handlers=[schedule(optimizer)])
        return trainer, count_parameters(unet), trainer.sample
    raise ValueError(f"model must be one of {MODELS}, got {model!r}.")


# ---------------------------------------------------------------------------------------------------- one cell
def run_cell(cell: dict, data: dict, settings: dict) -> dict:
    """Train one model and score its samples; returns a result row (see ``FIELDS``)."""
    from monai.data import Dataset

    from .data import train_loader
    from .metrics import ProxyFeatureNet, extract_features, ms_ssim_diversity, paired_ssim, precision_recall, proxy_fid
    from .visualize import save_grid_png

    torch.manual_seed(cell["seed"])
    torch.set_num_threads(settings["threads"])
    logging.getLogger("ignite").setLevel(logging.WARNING)
    device = torch.device(settings["device"])
    images, labels = data["train_images"], data["train_labels"]
    spatial_dims = images.ndim - 2
    num_classes = data["num_classes"] if cell["conditional"] else None
    generator = build_generator(cell["backbone"], spatial_dims, cell["latent_size"], images.shape[1],
                                tuple(images.shape[2:]), num_classes if cell["model"] != "ddpm" else None)
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))]
    loader = train_loader(Dataset(items), settings["batch_size"], seed=cell["seed"], drop_last=False)
    trainer, params, sampler = _trainer(cell, data, generator, loader, settings["epochs"], device)
    start = time.perf_counter()
    trainer.run()
    train_seconds = time.perf_counter() - start

    num = scored_count(settings["num_samples"], data)
    sample_labels = (torch.arange(num) % data["num_classes"]) if cell["conditional"] else None
    fake = sampler(num, 1000 + cell["seed"], sample_labels).float()
    reference = data["reference_images"][:num]
    net = ProxyFeatureNet(spatial_dims, images.shape[1], seed=0)
    pr = precision_recall(extract_features(net, reference), extract_features(net, fake))
    row = {
        **cell, "epochs": settings["epochs"], "n_train": len(images), "params": params,
        "sec_per_epoch": train_seconds / settings["epochs"], "train_seconds": train_seconds,
        "proxy_fid": proxy_fid(reference, fake, num_samples=None, seed=0),
        "ssim": paired_ssim(reference, fake, num_pairs=50, seed=0),
        "ms_ssim": ms_ssim_diversity(fake, seed=0), "ms_ssim_real": ms_ssim_diversity(reference, seed=0),
        "precision": pr["precision"], "recall": pr["recall"],
    }
    for name, weights_key in (("lpips", "lpips_weights"), ("fid", "inception_weights")):
        row[name] = ""
        if settings.get(weights_key):
            from .metrics import inception_fid, lpips_distance

            fn = lpips_distance if name == "lpips" else inception_fid
            row[name] = fn(reference, fake, weights_path=settings[weights_key])
    if settings.get("classifier") and cell["conditional"]:
        from .metrics import downstream_classifier

        scores = downstream_classifier(sampler, data["num_classes"], data["reference_images"],
                                       data["reference_labels"], settings["num_synthetic"], images, labels,
                                       epochs=settings["classifier_epochs"], seed=2000 + cell["seed"])
        row.update({"clf_accuracy": scores["synthetic_only"]["accuracy"],
                    "clf_macro_precision": scores["synthetic_only"]["macro_precision"],
                    "clf_macro_recall": scores["synthetic_only"]["macro_recall"],
                    "real_only_accuracy": scores["real_only"]["accuracy"],
                    "real_plus_synthetic_accuracy": scores["real_plus_synthetic"]["accuracy"]})
    grid = Path(settings["output"]) / "grids" / f"{_cell_key(cell).replace('|', '_')}.png"
    save_grid_png(fake[:16], grid, nrow=16, scale=2)
    row["grid"] = str(grid)
    torch.save(fake[:16], grid.with_suffix(".pt"))
    row["peak_rss_mb"] = peak_rss_mib()
    return row


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Reads ``VmHWM`` from ``/proc/self/status``. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not usable in a spawned
    child: Linux carries it over ``fork`` and ``execve``, so a child started by a 2 GB parent reports at least
    2 GB. ``VmHWM`` belongs to the process's current address space and starts afresh at ``execve``.
    Falls back to ``ru_maxrss`` (KiB on Linux) where ``/proc`` is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scored_count(num_samples: int, data: dict) -> int:
    """Images per metric: as many generated as held-out real ones (matched counts, appendix E), at most
    ``num_samples``."""
    return min(num_samples, len(data["reference_images"]))


def _cell_key(cell: dict) -> str:
    cond = "cond" if cell["conditional"] else "uncond"
    return "|".join(str(cell[k]) for k in ("dataset", "model", "backbone", "latent_size", "seed", "variant")) + "|" + cond


def _child(cell: dict, data_args: tuple, settings: dict, queue) -> None:
    try:
        data = load_benchmark_data(*data_args)
        queue.put(("ok", run_cell(cell, data, settings)))
    except Exception as err:  # reported by the parent with the cell that failed
        import traceback

        queue.put(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


# ---------------------------------------------------------------------------------------------------- tables
def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray([float(v) for v in values if v not in ("", None)], dtype=np.float64)
    if arr.size == 0:
        return "n/a"
    def fmt(value: float, digits: int) -> str:
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"

    if arr.size == 1:
        return fmt(arr[0], 3)
    return f"{fmt(arr.mean(), 3)} ± {fmt(arr.std(ddof=1), 2)}"


def summarize(rows: Sequence[dict]) -> str:
    """Markdown table: one line per (dataset, model, backbone, latent, variant, conditioning), mean ± std over
    seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        key = (row["dataset"], row["model"], row["backbone"], int(row["latent_size"]), row["variant"],
               str(row["conditional"]))
        groups[key].append(row)
    columns = [("proxy_fid", "proxy-FID ↓"), ("ssim", "SSIM ↑"), ("ms_ssim", "MS-SSIM (diversity ↓)"),
               ("precision", "precision ↑"), ("recall", "recall ↑"), ("lpips", "LPIPS ↓"), ("fid", "FID ↓"),
               ("clf_accuracy", "clf acc ↑"), ("clf_macro_precision", "clf macro prec ↑"),
               ("clf_macro_recall", "clf macro rec ↑"), ("real_only_accuracy", "real-only acc"),
               ("real_plus_synthetic_accuracy", "real+synthetic acc ↑"), ("sec_per_epoch", "s / epoch"),
               ("peak_rss_mb", "peak MB")]
    columns = [(k, t) for k, t in columns if any(r.get(k) not in ("", None) for r in rows)]
    lines = ["| dataset | model | backbone | d | variant | cond | seeds | params | " +
             " | ".join(t for _, t in columns) + " |",
             "|" + "---|" * (8 + len(columns))]
    order = {m: i for i, m in enumerate(MODELS)}
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[3], order.get(k[1], 9), k[4], k[5])):
        group = groups[key]
        dataset, model, backbone, latent, variant, cond = key
        params = int(float(group[0]["params"]))
        cells = [_mean_std([r.get(k) for r in group]) for k, _ in columns]
        lines.append(f"| {dataset} | {model} | {backbone} | {latent} | {variant} | {cond} | {len(group)} | "
                     f"{params:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparisons(rows: Sequence[dict], data: dict, output: Path) -> None:
    from .visualize import save_grid_png

    groups: dict[tuple, dict[str, str]] = defaultdict(dict)
    for row in rows:
        if row["variant"] == "default" and str(row["seed"]) == str(rows[0]["seed"]):
            groups[(row["dataset"], row["backbone"], row["latent_size"], str(row["conditional"]))][row["model"]] = row["grid"]
    # a diffusion model has no latent size (one run per backbone): show it beside every latent size
    ddpm = {(k[0], k[1], k[3]): g["ddpm"] for k, g in groups.items() if "ddpm" in g}
    for (dataset, backbone, _, cond), grids in groups.items():
        if "ddpm" not in grids and (dataset, backbone, cond) in ddpm:
            grids["ddpm"] = ddpm[(dataset, backbone, cond)]
    for (dataset, backbone, latent, cond), grids in groups.items():
        panels = [data["reference_images"][:16]]
        for model in MODELS:
            if model in grids and Path(grids[model]).with_suffix(".pt").is_file():
                panels.append(torch.load(Path(grids[model]).with_suffix(".pt"), weights_only=True))
        name = f"comparison_{Path(str(dataset)).stem}_{backbone}_z{latent}_{'cond' if cond == 'True' else 'uncond'}.png"
        save_grid_png(torch.cat(panels), output / name, nrow=16, scale=2)


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--backbones", nargs="+", default=["conv"], choices=BACKBONES)
    parser.add_argument("--latent-sizes", nargs="+", type=int, default=[16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=VARIANTS,
                        help="NeuroSQL variants (ablations); other models run 'default' only")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=None, help="resize (default: native; 64 for OASIS)")
    parser.add_argument("--num-samples", type=int, default=2048, help="generated = real images per metric")
    parser.add_argument("--conditional", action="store_true", help="class-conditional models")
    parser.add_argument("--classifier", action="store_true", help="downstream classifier (implies --conditional)")
    parser.add_argument("--num-synthetic", type=int, default=10000, help="synthetic images for the classifier")
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--lpips-weights", default=None, help="VGG-16 weights file (else torch hub cache)")
    parser.add_argument("--inception-weights", default=None, help="Inception-v3 weights file (else hub cache)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="runs/benchmark")
    args = parser.parse_args(argv)

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    conditional = args.conditional or args.classifier
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "num_samples": args.num_samples,
                "device": args.device, "threads": args.threads, "output": str(output), "classifier": args.classifier,
                "num_synthetic": args.num_synthetic, "classifier_epochs": args.classifier_epochs,
                "lpips_weights": args.lpips_weights, "inception_weights": args.inception_weights}
    from .metrics.features import hub_checkpoint_path
    from .metrics.fid import INCEPTION_WEIGHTS
    from .metrics.lpips_metric import VGG16_WEIGHTS

    for key, filename in (("lpips_weights", VGG16_WEIGHTS), ("inception_weights", INCEPTION_WEIGHTS)):
        if settings[key] is None and hub_checkpoint_path(filename).is_file():
            settings[key] = str(hub_checkpoint_path(filename))
    data_args = (args.dataset, args.image_size, args.max_train, output)
    cells = []
    for backbone in args.backbones:
        for latent in args.latent_sizes:
            for model in args.models:
                for variant in (args.variants if model == "neurosql" else ["default"]):
                    for seed in args.seeds:
                        if model == "ddpm" and latent != args.latent_sizes[0]:
                            continue  # a diffusion model has no latent size: one set of runs per backbone
                        cells.append({"dataset": args.dataset, "model": model, "backbone": backbone,
                                      "latent_size": latent, "seed": seed, "variant": variant,
                                      "conditional": conditional})
    csv_path = output / "results.csv"
    rows: list[dict] = []
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    done = {_cell_key({**r, "conditional": r["conditional"] == "True"}) for r in rows}
    todo = [c for c in cells if _cell_key(c) not in done]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already in {csv_path}, {len(todo)} to run", flush=True)
    ctx = mp.get_context("spawn")
    for cell in tqdm(todo, desc="benchmark cells"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(cell, data_args, settings, queue))
        proc.start()
        status, payload = queue.get()
        proc.join()
        if status != "ok":
            raise RuntimeError(f"benchmark cell {_cell_key(cell)} failed:\n{payload}")
        rows.append(payload)
        new = not csv_path.is_file()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(payload)
    table = summarize(rows)
    data = load_benchmark_data(*data_args)
    num = scored_count(args.num_samples, data)
    (output / "results.md").write_text(
        f"Settings: epochs {args.epochs}, batch {args.batch_size}, training images <= {args.max_train}, "
        f"{num} generated vs {num} held-out real images per metric, learning rates "
        f"{LEARNING_RATES}, AdamW + cosine + gradient clipping 1.0 for all.\n\n{table}\n")
    print(table)
    _comparisons(rows, data, output)
    return rows


if __name__ == "__main__":
    main()

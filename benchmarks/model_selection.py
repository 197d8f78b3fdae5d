"""Does the bundles' ``best.pt`` pick NeuroSQL's best samples? Held-out assignment cost against sample quality, epoch
by epoch.

The bundles keep two checkpoints: ``model.pt`` (the last epoch) and ``best.pt``, the epoch with the lowest
held-out assignment cost (:class:`~monai_neurosql.handlers.ValidationAssignmentCost`: the validation images matched
to a fresh lattice, SSIM+L1 cost; the paper's early-stopping criterion, appendix L), and the bundles generate from
``best.pt``. This script trains NeuroSQL as the benchmark does (ConvGenerator, package defaults, cosine schedule
over ``--epochs`` like the bundles) and every ``--every`` epochs records that cost beside the KID of 1024 samples,
on the validation split (what a KID-based selection would see) and on the test split in every feature space of a
finished benchmark run (``domain_encoder.pt`` and the cross-check ``domain_encoder_<kind>.pt``). It then scores the
three candidate checkpoints on the test split: the one ``best.pt`` would hold, the last epoch (``model.pt``) and
the epoch of the lowest validation KID, with the paired KID difference (``best.pt`` minus last, same test images;
beyond 2 SE is resolved).

Usage (after a benchmark run, with its data arguments)::

    python benchmarks/model_selection.py --dataset fashion-mnist --max-train 2000 --epochs 30 --seed 0 \\
        --output runs/bench_fmnist
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_run_arguments, load_run_encoders, log, markdown_table

NUM = 1024  # samples per evaluation (and validation/test images, at most the split)
VAL_COST_IMAGES = 512  # the bundles' ``val_max_images``


def _trace(data: dict, encoders: dict, cell: dict, epochs: int, every: int, threads: int) -> tuple[list, dict]:
    """Train the cell; per evaluation: ``{"epoch", "val_cost", "val_kid", "kid_<space>", ...}``, and the test
    features of its samples (for the paired differences) with the number of images per evaluation."""
    from ignite.engine import Events
    from monai.data import Dataset

    from monai_neurosql.benchmark.cells import build_model
    from monai_neurosql.data import train_loader
    from monai_neurosql.metrics import extract_features, kernel_distance
    from monai_neurosql.validation import heldout_assignment_cost, validation_settings

    torch.manual_seed(int(cell["seed"]))
    torch.set_num_threads(threads)
    images, labels = data["train_images"], data["train_labels"]
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))]
    loader = train_loader(Dataset(items), 64, seed=int(cell["seed"]), drop_last=False)
    built = build_model(cell, data, loader, epochs, torch.device("cpu"), {})
    trainer, generator = built["trainer"], built["modules"]["generator"]
    unseen = data["unseen_images"]
    num = min(NUM, len(unseen), len(data["reference_images"]))
    cost_images = unseen[torch.randperm(len(unseen), generator=torch.Generator().manual_seed(12345))[:VAL_COST_IMAGES]]
    val_features = extract_features(encoders["domain"], unseen[:num])
    test_features = {k: extract_features(e, data["reference_images"][:num]) for k, e in encoders.items()}
    rows, features = [], {}
    settings = validation_settings(None)

    def evaluate(engine) -> None:
        epoch = engine.state.epoch
        cost = heldout_assignment_cost(generator, cost_images, trainer.bank.prior, trainer.bank.dim, seed=12345,
                                       settings=settings)
        fake = built["sampler"](num, 1000 + int(cell["seed"]), None).float()
        row = {"epoch": epoch, "val_cost": cost,
               "val_kid": kernel_distance(val_features, extract_features(encoders["domain"], fake))["kid"]}
        features[epoch] = {k: extract_features(e, fake) for k, e in encoders.items()}
        for k, f in features[epoch].items():
            row[f"kid_{k}"] = kernel_distance(test_features[k], f)["kid"]
        rows.append(row)
        log(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=every), evaluate)
    if epochs % every:
        trainer.add_event_handler(Events.COMPLETED, evaluate)
    trainer.run()
    return rows, {"test": test_features, "samples": features, "num": num}


def candidate_epochs(rows: list[dict]) -> dict[str, int]:
    """The epoch each checkpoint would hold: ``best.pt`` (lowest validation assignment cost; the first of equals, as
    the bundles' ``CheckpointSaver`` keeps the first best), ``model.pt`` (the last evaluation) and the lowest
    validation KID."""
    return {"best.pt (lowest validation assignment cost)": min(rows, key=lambda r: r["val_cost"])["epoch"],
            "model.pt (last epoch)": rows[-1]["epoch"],
            "lowest validation KID": min(rows, key=lambda r: r["val_kid"])["epoch"]}


def main(argv: list[str] | None = None) -> str:
    from monai_neurosql.benchmark.data import load_benchmark_data
    from monai_neurosql.benchmark.paired import paired_verdict
    from monai_neurosql.metrics import kernel_distance, kid_difference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--epochs", type=int, default=30, help="the bundles' num_epochs (cosine schedule over them)")
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    output = Path(args.output)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, demo_scale=args.demo_scale)
    encoders, names = load_run_encoders(output)
    cell = {"dataset": data["name"], "model": "neurosql", "backbone": "conv", "latent_size": args.latent_size,
            "seed": args.seed, "variant": "default", "conditional": "False", "protocol": "epochs"}
    rows, feats = _trace(data, encoders, cell, args.epochs, args.every, args.threads)
    stem = f"model_selection_e{args.epochs}_s{args.seed}"
    with open(output / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    picks = candidate_epochs(rows)
    spaces = list(encoders)
    trace = markdown_table(["epoch", "validation assignment cost", "validation KID", *[f"test KID {names[k]}" for k in spaces]],
                           [[str(r["epoch"]), f"{r['val_cost']:.4f}", f"{r['val_kid']:.3g}",
                             *[f"{r[f'kid_{k}']:.3g}" for k in spaces]] for r in rows])
    best, last = picks["best.pt (lowest validation assignment cost)"], picks["model.pt (last epoch)"]
    table_rows = []
    for name, epoch in picks.items():
        cells = [name, str(epoch)]
        for k in spaces:
            kid = kernel_distance(feats["test"][k], feats["samples"][epoch][k])
            cells.append(f"{kid['kid']:.3g} ± {kid['kid_se']:.2g}")
        table_rows.append(cells)
    diff_cells = ["best.pt minus model.pt (paired)", f"{best} vs {last}"]
    for k in spaces:
        d = kid_difference(feats["test"][k], feats["samples"][best][k], feats["samples"][last][k])
        verdict = "" if best == last else {"a closer": " (best.pt closer)", "b closer": " (model.pt closer)",
                                           "not resolved": " (not resolved)"}[paired_verdict(d)]
        diff_cells.append(f"{d['difference']:+.3g} ± {d['se']:.2g}{verdict}")
    table_rows.append(diff_cells)
    picked = markdown_table(["checkpoint", "epoch", *[f"test KID {names[k]}" for k in spaces]], table_rows)
    num = feats["num"]
    text = (f"\n{data['name']}, seed {args.seed}, {args.epochs} epochs (cosine), {len(data['train_images'])} training "
            f"images; {num} samples per evaluation against {num} validation / test images; assignment cost on "
            f"{min(VAL_COST_IMAGES, len(data['unseen_images']))} validation images\n\n{picked}\n\n{trace}\n")
    print(text)
    (output / f"{stem}.md").write_text(text)
    return text


if __name__ == "__main__":
    main()

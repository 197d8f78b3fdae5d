"""Does choosing the domain encoder's seed on the validation split hold on the test split?

The ``"auto"`` domain space at 64-128 px (an autoencoder on the images resized to 32 px) ranks anatomy before texture
more or less firmly depending on its training seed. ``train_domain_encoder(kind="auto", validation=...)`` trains
``AUTO_CANDIDATES`` consecutive seeds and keeps the one of the largest
:func:`~monai_neurosql.metrics.structure_margin` on the validation split (phase-scrambled vs mildly blurred real
training images, a paired KID z-score). This script trains the encoders of ``--seeds`` as ``"auto"`` does, scores
each one's structure margin against the validation split and against the test split (the images every model is
scored against; the same control images, drawn with the seed of the encoder's group, and other ones), and reports,
per group of ``--candidates`` consecutive seeds, the seed the rule keeps and its test margin beside the first seed's
(what one encoder gives).

Usage::

    python benchmarks/encoder_seed_selection.py --dataset demo --demo-scale 16 --image-size 64 --max-train 1000 \\
        --seeds 0 1 2 3 4 5 6 7 8 --output runs/encoder_seed_selection

Writes ``encoder_seed_selection.md`` and ``.csv`` under ``--output``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_lines, markdown_table

from monai_neurosql.benchmark.data import load_benchmark_data
from monai_neurosql.metrics import AUTO_CANDIDATES, auto_encoder_settings, structure_margin, train_domain_encoder
from monai_neurosql.utils import write_csv

#: The test margin is also computed with the control images drawn with the group's seed + this (other training
#: images scrambled and blurred): a choice that held only for the control images it was made with would show there.
OTHER_DRAW = 100


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and score the encoders of ``--seeds``; returns one row per seed (``kept``: the rule keeps it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--demo-scale", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(9)))
    parser.add_argument("--candidates", type=int, default=AUTO_CANDIDATES, help="seeds per group (auto's count)")
    parser.add_argument("--epochs", type=int, default=15, help="the encoders' epochs (the benchmark's default)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="runs/encoder_seed_selection")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, demo_scale=args.demo_scale)
    train, val, test = data["train_images"], data["unseen_images"], data["reference_images"]
    auto = auto_encoder_settings(train.shape)
    if auto["kind"] != "autoencoder":
        raise SystemExit(f"'auto' trains a {auto['kind']} encoder at {tuple(train.shape[2:])}: there is no seed to "
                         "choose (pass 64-128 px images).")
    rows = []
    for i, seed in enumerate(args.seeds):
        group = args.seeds[i - i % args.candidates]  # its group's first seed
        start = time.perf_counter()
        encoder = train_domain_encoder(train, data["train_labels"], kind=auto["kind"], input_size=auto["input_size"],
                                       epochs=args.epochs, seed=seed)
        seconds = time.perf_counter() - start
        row = {"seed": seed, "group": group, "train_seconds": round(seconds, 1),
               "validation_z": structure_margin(encoder, train, val, seed=group),
               "test_z": structure_margin(encoder, train, test, seed=group),
               "test_z_other_draw": structure_margin(encoder, train, test, seed=group + OTHER_DRAW)}
        log(f"seed {seed}: validation {row['validation_z']:.2f}, test {row['test_z']:.2f} "
            f"({row['test_z_other_draw']:.2f} with other control images) in {seconds:.0f} s")
        rows.append(row)
    write_csv(output / "encoder_seed_selection.csv", rows, list(rows[0]))

    groups = []
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        kept = max(members, key=lambda r: r["validation_z"])
        for r in members:
            r["kept"] = r is kept
        groups.append([f"{members[0]['seed']}-{members[-1]['seed']}", kept["seed"], f"{kept['validation_z']:.1f}",
                       f"{kept['test_z']:.1f} ({kept['test_z_other_draw']:.1f})",
                       f"{members[0]['test_z']:.1f} ({members[0]['test_z_other_draw']:.1f})",
                       f"{max(r['test_z'] for r in members):.1f}"])
    v = torch.tensor([r["validation_z"] for r in rows], dtype=torch.float64)
    t = torch.tensor([r["test_z"] for r in rows], dtype=torch.float64)
    corr = float(torch.corrcoef(torch.stack([v, t]))[0, 1]) if len(rows) > 2 else float("nan")
    text = "\n".join([
        "# Domain encoder seed chosen on the validation split",
        "",
        *machine_lines(args.threads),
        (f"- data: {data['name']}, {len(train)} training, {len(val)} validation, {len(test)} test images; encoder: "
        f"{auto['kind']} on the images resized to {auto['input_size']} px, {args.epochs} epochs"),
        "",
        ("Structure margin (KID(phase-scrambled) - KID(mildly blurred)) / paired SE, per encoder seed; above 3 the "
        "space ranks anatomy before texture."),
        "",
        markdown_table(["seed", "group", "validation z", "test z", "test z, other controls", "train s"],
                       [[r["seed"], r["group"], f"{r['validation_z']:.2f}", f"{r['test_z']:.2f}",
                         f"{r['test_z_other_draw']:.2f}", f"{r['train_seconds']:.0f}"] for r in rows]),
        "",
        f"Correlation of the validation and test margins over the {len(rows)} seeds: {corr:.3f}.",
        "",
        (f"Per group of {args.candidates} seeds: the seed kept by the validation margin, its margins, the first seed's "
        "test margin (one encoder, no choice) and the best test margin in the group (an oracle); in brackets with "
        "the other control images."),
        "",
        markdown_table(["seeds", "kept", "kept validation z", "kept test z", "first seed test z", "best test z"],
                       groups),
        "",
    ])
    (output / "encoder_seed_selection.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()

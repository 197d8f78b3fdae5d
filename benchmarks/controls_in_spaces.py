"""KID of a finished benchmark run's controls and of every cell's saved samples, in each of the run's feature spaces.

The quick second look at a run when a control is added or a space is in doubt: no model is trained and no
memorization audit is run (``python -m monai_neurosql.benchmark --rescore`` scores everything again, audit included).
The controls are built as the run builds them (:func:`~monai_neurosql.metrics.control_sets`, seed 0, as many images
as each cell scored), so the phase-scrambled control can be put beside runs scored before it existed. Every
``cells/*/samples.npz`` of ``--output`` (and of ``--cells-from`` folders run on the same data) is scored against
the test split in the run's spaces and in any ``--encoders NAME=PATH`` given (e.g. deeper encoders trained apart),
and the order of the negative controls is checked per space (:func:`~monai_neurosql.metrics.control_flags`).
Prints a table and the flags; writes ``<output>/controls_in_spaces.csv``.

Usage (with the run's own data arguments)::

    python benchmarks/controls_in_spaces.py --dataset demo --demo-scale 16 --image-size 128 --max-train 1000 \\
        --num-samples 2048 --output runs/bench_demo128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_run_arguments, load_run_encoders, log, machine_lines, markdown_table

from monai_neurosql.benchmark.cells import scored_count
from monai_neurosql.benchmark.data import load_benchmark_data
from monai_neurosql.metrics import (
    MIN_SAMPLES,
    below_minimum,
    control_flags,
    control_sets,
    extract_features,
    kernel_distance,
    load_domain_encoder,
)
from monai_neurosql.utils import write_csv


def _value(row: dict, space: str) -> str:
    value, se = row[f"kid_{space}"], row[f"kid_{space}_se"]
    return value if isinstance(value, str) else f"{value:.3g} ± {se:.2g}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--num-samples", type=int, default=2048, help="the run's --num-samples")
    parser.add_argument("--cells-from", nargs="*", default=[], help="more run folders of the same data")
    parser.add_argument("--encoders", nargs="*", default=[], metavar="NAME=PATH",
                        help="more feature spaces: domain encoders saved with save_domain_encoder (e.g. deeper ones)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, demo_scale=args.demo_scale)
    num = scored_count(args.num_samples, data)
    reference = data["reference_images"][:num].float()
    sets = {f"control:{name}": images for name, images in
            control_sets(data["train_images"], data["unseen_images"], num, seed=0).items()}
    cells = []
    for folder in [output, *map(Path, args.cells_from)]:
        for path in sorted(folder.glob("cells/*/samples.npz")):
            if path.parent.name not in sets:  # a cell kept in two folders: the first one's samples
                cells.append(path.parent.name)
                sets[path.parent.name] = torch.from_numpy(np.load(path)["images"][:num]).float()
    encoders, names = load_run_encoders(output)
    for item in args.encoders:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--encoders takes NAME=PATH items, got {item!r}.")
        encoders[name], names[name] = load_domain_encoder(path), name
    scores: dict[str, dict[str, float]] = {name: {} for name in sets}
    for space, encoder in encoders.items():
        real = extract_features(encoder, reference)
        for name, images in sets.items():
            n = min(len(images), len(real))  # against the first n test images, as the benchmark's scorer does
            if n < MIN_SAMPLES["kid"]:
                scores[name][f"kid_{space}"] = scores[name][f"kid_{space}_se"] = below_minimum(None, n, MIN_SAMPLES["kid"])
                continue
            result = kernel_distance(real[:n], extract_features(encoder, images[:n]))
            scores[name][f"kid_{space}"], scores[name][f"kid_{space}_se"] = result["kid"], result["kid_se"]
        log(f"{names[space]}: {len(sets)} sets scored")
    results = {name.removeprefix("control:"): values for name, values in scores.items()}
    flags = control_flags(results, {f"kid_{space}": ("distribution", False) for space in encoders}, cells)
    rows = [{"set": name, **values} for name, values in scores.items()]
    write_csv(output / "controls_in_spaces.csv", rows, list(rows[0]))
    print(f"# KID of the controls and the saved samples in each feature space ({output})\n")
    print("\n".join(machine_lines(args.threads)) + "\n")
    print(f"{num} images per set against {num} test images; KID ± SE (x 1000, as in the benchmark's tables).\n")
    print(markdown_table(["set", *(f"KID {names[s]}" for s in encoders)],
                         [[row["set"], *(_value(row, s) for s in encoders)] for row in rows]))
    print(f"\nControl check: {len(flags)} order violations" + (":" if flags else "."))
    print("\n".join(f"- {line}" for line in flags))
    return rows


if __name__ == "__main__":
    main()

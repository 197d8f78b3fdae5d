"""Collects the feature-space studies of this folder (one sub-folder per command, its feature_space.csv) into one
table of the margins at the largest sample size of each study (504 test images at 64 and 128 px), as printed in
docs/benchmarks.md. Run from the repository root: python docs/results/feature_space_64_128/collect.py"""
import csv
from pathlib import Path

from monai_neurosql.benchmark.feature_space import margins

HERE = Path(__file__).parent
VARIANTS = {"3": "full size, 3 stages", "deep": "full size, deeper (4 x 4 last map)",
            "in32": "resized to 32 px, 3 stages", "ae32": "resized to 32 px, 3 stages",
            "in16": "resized to 16 px, 2 stages", "brains": "full size, 3 stages", "fmnist": "full size, 3 stages"}
DATA = {"64": "demo brains, 64 px", "128": "demo brains, 128 px", "28": "28 px"}


def read(folder: Path) -> list[dict]:
    with open(folder / "feature_space.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("n", "fd", "kid", "kid_se"):
            row[key] = int(row[key]) if key == "n" else float(row[key])
    return rows


table = []
for folder in sorted(p for p in HERE.iterdir() if (p / "feature_space.csv").is_file()):
    size, variant, *rest = folder.name[2:].split("_")  # e.g. fs64_in32_s1 -> 64, in32, s1
    seed = int(rest[0][1:]) if rest else 0
    data = {"brains": "brains (MedMNIST layout), 28 px", "fmnist": "Fashion-MNIST, 28 px"}.get(variant, DATA[size])
    summary = margins(read(folder))
    n = max(m["n"] for m in summary)
    for m in summary:
        if m["n"] == n:
            table.append(((["64", "128", "28"].index(size), variant != "fmnist", list(VARIANTS).index(variant),
                           m["space"], seed), data, VARIANTS[variant], m, n))
lines = ["| data | encoder input | space | seed | n | kid_z_min (hardest control) | structure_z | blur_rank | trusted |",
         "|---|---|---|---|---|---|---|---|---|"]
for key, data, variant, m, n in sorted(table, key=lambda t: t[0]):
    lines.append(f"| {data} | {variant} | {m['space']} | {key[-1]} | {n} | {m['kid_z_min']:.1f} ({m['hardest_control']}) | "
                 f"{m['structure_z']:.1f} | {m['blur_rank']:.2g} | {'**yes**' if m['trusted'] else 'no'} |")
print("\n".join(lines))

"""Collects the feature-space studies of this folder (one sub-folder per command, its feature_space.csv) into one
table of the margins at the largest sample size of each study (504 test images at 64 and 128 px), as printed in
docs/benchmarks.md. Run from the repository root: python docs/results/feature_space_64_128/collect.py

Folder names: ``fs<size>_<encoder input>[_<seeds>]``; seeds ``s<k>`` (the encoders' and the controls' seed k),
``e<a>c<b>`` (encoder seed a, control seed b: ``--seed a --control-seed b``), ``ep<k>_e<a>`` (k training epochs,
encoder seed a, control seed 0). The column SE says how a study's z-scores were computed: ``paired`` (the SE of the
paired KID difference, ``metrics.kid_difference``; studies run since it) or ``quadrature`` (the two KIDs' SEs
combined as if independent: studies not run again, their z-scores smaller, of the same sign)."""
import csv
from pathlib import Path

from monai_neurosql.benchmark.feature_space import margins

HERE = Path(__file__).parent
VARIANTS = {"3": "full size, 3 stages", "3cls": "full size, 3 stages", "deep": "full size, deeper (4 x 4 last map)",
            "in32": "resized to 32 px, 3 stages", "ae32": "resized to 32 px, 3 stages",
            "ae32x3": "resized to 32 px, 3 encoders (seeds k to k + 2)",
            "in16": "resized to 16 px, 2 stages", "brains": "full size, 3 stages", "fmnist": "full size, 3 stages"}
DATA = {"64": "demo brains, 64 px", "128": "demo brains, 128 px", "28": "28 px"}


def read(folder: Path) -> list[dict]:
    with open(folder / "feature_space.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("n", "fd", "kid", "kid_se"):
            row[key] = int(row[key]) if key == "n" else float(row[key])
    return rows


def seeds(parts: list[str]) -> str:
    """The seed column: ``k`` (encoders and controls), ``enc a / ctrl b``, with ``, k epochs`` where not 15."""
    epochs = next((p[2:] for p in parts if p.startswith("ep")), None)
    label = "0"
    for p in parts:
        if p.startswith("s"):
            label = p[1:]
        elif p.startswith("e") and not p.startswith("ep"):
            enc, _, ctrl = p[1:].partition("c")
            label = f"enc {enc} / ctrl {ctrl or 0}"
    return label + (f", {epochs} epochs" if epochs else "")


table = []
for folder in sorted(p for p in HERE.iterdir() if (p / "feature_space.csv").is_file()):
    size, variant, *rest = folder.name[2:].split("_")  # e.g. fs64_in32_s1 -> 64, in32, [s1]
    data = {"brains": "brains (MedMNIST layout), 28 px", "fmnist": "Fashion-MNIST, 28 px"}.get(variant, DATA[size])
    rows = read(folder)
    se = "paired" if rows and rows[0].get("z_floor") is not None else "quadrature"
    summary = margins(rows)
    n = max(m["n"] for m in summary)
    label = seeds(rest)
    for m in summary:
        if m["n"] == n:
            key = (["64", "128", "28"].index(size), variant != "fmnist", list(VARIANTS).index(variant), m["space"],
                   label.startswith("enc"), "epochs" in label, label)
            table.append((key, data, VARIANTS[variant], m, n, label, se))
header = "| data | encoder input | space | seed | n | kid_z_min (hardest control) | structure_z | blur_rank | trusted | SE |"
lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
for key, data, variant, m, n, label, se in sorted(table, key=lambda t: t[0]):
    lines.append(f"| {data} | {variant} | {m['space']} | {label} | {n} | {m['kid_z_min']:.1f} "
                 f"({m['hardest_control']}) | {m['structure_z']:.1f} | {m['blur_rank']:.2g} | {'**yes**' if m['trusted'] else 'no'} | {se} |")
print("\n".join(lines))

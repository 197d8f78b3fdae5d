"""NeuroSQL's backbones and latent sizes against one reference setting, seed by seed, in every space of a run.

The benchmark's ``paired.csv`` compares models within one backbone and latent size; this compares settings of one
model across them: every NeuroSQL row of a finished run (``--output``) against the row of the reference setting
(``--reference conv 16``: the ConvGenerator, d = 16) of the same seed, protocol, variant and conditioning, as the
difference of their KIDs against the same test images with the SE of that difference
(:func:`~monai_neurosql.metrics.kid_difference`), in the run's domain space and every cross-check space. Scores the
cells' saved ``samples.npz``; trains nothing. Writes ``<output>/paired_backbones.csv`` (``paired_backbones_<protocol>.csv``
with ``--reference-protocol``) and prints the table
(difference = KID(reference) - KID(other): positive means the other setting is closer to the real images).

Usage (with the run's own data arguments)::

    python benchmarks/paired_backbones.py --dataset demo --demo-scale 16 --image-size 64 --max-train 1000 \\
        --output runs/bench_demo64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_run_arguments, load_run_encoders

from monai_neurosql.benchmark.data import load_benchmark_data
from monai_neurosql.benchmark.paired import PAIRED_FIELDS, paired_kid_rows, paired_table
from monai_neurosql.utils import read_csv, write_csv


def backbone_pairs(rows: list[dict], backbone: str, latent_size: str,
                   protocol: str | None = None) -> list[tuple[dict, dict]]:
    """``(reference row, other row)`` for every NeuroSQL row with a reference row (``backbone``, ``latent_size``) of
    the same data set, seed, variant, conditioning and protocol; with ``protocol``, the reference rows are those of
    that protocol, each compared with the other rows of its seed under any protocol (e.g. the ConvGenerator trained
    for a FiLM U-Net's wall-clock time against the FiLM U-Net's equal-epochs cell). Each pair is relabelled for the
    paired table: both rows carry the reference's backbone and latent size, and the other's model is named
    ``<backbone>_z<d>``."""

    def key(row: dict) -> tuple:
        return (row["dataset"], row["seed"], protocol or row.get("protocol", "epochs"), row.get("variant", "default"),
                row.get("conditional"))

    neurosql = [r for r in rows if r["model"] == "neurosql"]
    references = {key(r): r for r in neurosql if r["backbone"] == backbone and str(r["latent_size"]) == latent_size
                  and (protocol is None or r.get("protocol", "epochs") == protocol)}
    pairs = []
    for row in neurosql:
        ref = references.get(key(row))
        if ref is None or ref is row:
            continue
        other = {**row, "model": f"{row['backbone']}_z{row['latent_size']}", "backbone": backbone,
                 "latent_size": latent_size}
        pairs.append((ref, other))
    return pairs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--reference", nargs=2, default=["conv", "16"], metavar=("BACKBONE", "D"),
                        help="the setting every other NeuroSQL row is compared with (default: conv 16)")
    parser.add_argument("--reference-protocol", default=None,
                        help="take the reference's rows of this protocol and compare them with every protocol's rows "
                             "(default: each protocol with its own)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    rows = read_csv(output / "results.csv")
    pairs = backbone_pairs(rows, *args.reference, protocol=args.reference_protocol)
    if not pairs:
        raise SystemExit(f"{output / 'results.csv'} holds no NeuroSQL row with a {' d = '.join(args.reference)} row "
                         "of the same seed to compare with.")
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, demo_scale=args.demo_scale)
    encoders, _ = load_run_encoders(output)
    paired = paired_kid_rows(rows, data["reference_images"], encoders, pairs)
    name = f"paired_backbones{'_' + args.reference_protocol if args.reference_protocol else ''}.csv"
    write_csv(output / name, paired, PAIRED_FIELDS)
    print(paired_table(paired))
    return paired


if __name__ == "__main__":
    main()

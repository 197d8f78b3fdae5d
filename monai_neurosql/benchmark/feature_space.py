"""Which feature space orders the controls correctly, with the widest margins? One command per data set.

Usage::

    python -m monai_neurosql.benchmark.feature_space --dataset fashion-mnist --sizes 64 256 1024 \\
        --output runs/feature_space_fmnist

For each domain encoder kind (classifier, autoencoder, contrastive; all trained on the same real training images)
and for the paper's proxy features, the control sets (:func:`~monai_neurosql.metrics.control_sets`) and graded
blurs of real training images are scored against the test split at each sample size: Frechet distance, KID +- SE,
precision/recall/coverage, and the paired z-scores ``z_floor`` (each set against the real floor) and ``z_mild``
(phase-scrambled against ``blurred_mild``). Margins: for KID the smallest ``(KID(control) - KID(floor)) / SE`` over
the negative controls (a z-score, the SE that of the paired difference against the same test images,
:func:`~monai_neurosql.metrics.kid_difference`; above ~3 the order is resolved; ``hardest_control`` names the control
of that smallest margin, often the phase-scrambled one), for the Frechet distance the smallest ratio
``FD(control) / FD(floor)``; ``blur_rank`` is the Spearman correlation between blur strength and KID
(1 = every blur step is ranked worse than the previous). The trained encoders are saved as
``encoder_<kind>.pt`` beside the tables.

Structure before texture: ``structure_z = (KID(phase_scrambled) - KID(blurred_mild)) / SE``, where ``blurred_mild``
is the real training images blurred with a sigma of 1/32 of the image side (2 px at 64 x 64, 4 px at 128 x 128: the
anatomy kept, the fine detail gone) and ``phase_scrambled`` keeps the fine detail's statistics but not the anatomy.
A space users can trust ranks the anatomy closer to real (``structure_z > 3``); texture-biased features do the
opposite. ``trusted``: every negative control resolved (``kid_z_min > 3``), ``structure_z > 3`` and
``blur_rank == 1``; the criteria use only real images and their controls, never a model's samples, so the space is
chosen before any model is looked at. Writes ``feature_space.csv`` and ``feature_space.md`` (with the trusted space
of the widest margin at the largest sample size, if any).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..metrics.controls import MILD_BLUR_FRACTION, NEGATIVE_CONTROLS, RESOLVED_Z

__all__ = ["choose_space", "main", "margins", "score_feature_spaces"]

BLUR_STEPS = (0.5, 1.0, 2.0)


def _spearman(values: Sequence[float]) -> float:
    ranks = torch.tensor(values, dtype=torch.float64).argsort().argsort().double()
    steps = torch.arange(len(values), dtype=torch.float64)
    return float(torch.corrcoef(torch.stack([ranks, steps]))[0, 1])


def score_feature_spaces(data: dict, kinds: Sequence[str], sizes: Sequence[int], seed: int = 0,
                         epochs: int = 15, feature_size: int = 64,
                         channels: Sequence[int] | None = None, input_size: int | None = None,
                         save_dir: str | Path | None = None, control_seed: int | None = None,
                         members: int = 1) -> list[dict]:
    """One row per (feature space, sample size, set) with FD, KID, SE, precision, recall, coverage; ``channels``:
    the encoders' stage widths (default :func:`~monai_neurosql.metrics.train_domain_encoder`'s three stages);
    ``input_size``: the encoders see the images resized to that side (the proxy features the images as they are);
    ``save_dir``: each trained encoder is saved there as ``encoder_<kind>.pt`` (reusable by the benchmark's
    ``--domain-encoder`` and by ``benchmarks/controls_in_spaces.py --encoders``); ``seed`` seeds the encoders'
    training and, unless ``control_seed`` is given, the control images drawn (so that the two can be varied apart);
    ``members``: each encoder space is that many encoders (seeds ``seed`` onwards) as one
    :class:`~monai_neurosql.metrics.DomainEncoderEnsemble`."""
    from ..metrics import (
        ProxyFeatureNet,
        blur,
        control_sets,
        density_coverage,
        extract_features,
        frechet_distance,
        kernel_distance,
        precision_recall,
        save_domain_encoder,
        train_domain_encoder,
    )

    train, labels = data["train_images"], data["train_labels"]
    reference, unseen = data["reference_images"], data["unseen_images"]
    nets = {}
    for kind in kinds:
        if kind == "proxy":
            nets[kind] = ProxyFeatureNet(train.ndim - 2, train.shape[1], seed=0)
        else:
            extra = {"channels": tuple(channels)} if channels else {}
            extra.update({"input_size": input_size} if input_size else {})
            extra.update({"members": members} if members > 1 else {})
            nets[kind] = train_domain_encoder(train, labels, kind=kind, epochs=epochs, feature_size=feature_size,
                                              seed=seed, **extra)
            if save_dir is not None:
                save_domain_encoder(nets[kind], Path(save_dir) / f"encoder_{kind}.pt")
    rows = []
    for size in sizes:
        n = min(size, len(reference), len(unseen), len(train))
        sets = control_sets(train, unseen, n, seed=seed if control_seed is None else control_seed)
        sets.update({f"blur_{s:g}": blur(sets["real_train"], s) for s in BLUR_STEPS})
        sets["blurred_mild"] = blur(sets["real_train"], min(train.shape[2:]) * MILD_BLUR_FRACTION)
        for kind, net in nets.items():
            ref = extract_features(net, reference[:n])
            feats = {name: extract_features(net, images) for name, images in sets.items()}
            for name, f in feats.items():
                row = {"space": kind, "n": n, "set": name, "fd": frechet_distance(ref, f), **kernel_distance(ref, f)}
                if n > 5:
                    row.update(precision_recall(ref, f))
                    row["coverage"] = density_coverage(ref, f)["coverage"]
                if n > 2 and name != "real_unseen":
                    row["z_floor"] = _paired_z(ref, f, feats["real_unseen"])
                if n > 2 and name == "phase_scrambled":
                    row["z_mild"] = _paired_z(ref, f, feats["blurred_mild"])
                rows.append(row)
    return rows


def _paired_z(reference: torch.Tensor, worse: torch.Tensor, better: torch.Tensor) -> float:
    """``(KID(worse) - KID(better)) / SE`` against the same reference, the SE of the paired difference
    (:func:`~monai_neurosql.metrics.kid_difference`: the reference's own noise cancels)."""
    from ..metrics import kid_difference

    d = kid_difference(reference, worse, better)
    return d["difference"] / max(d["se"], 1e-12)


def margins(rows: Sequence[dict]) -> list[dict]:
    """Per (space, n): the KID z-score margin, the FD ratio margin and the blur ranking (see the module doc)."""
    out = []
    keys = sorted({(r["space"], r["n"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for space, n in keys:
        sets = {r["set"]: r for r in rows if r["space"] == space and r["n"] == n}
        floor = sets["real_unseen"]
        z, ratio = {}, []
        for control in NEGATIVE_CONTROLS["distribution"]:
            c = sets[control]
            z[control] = _z(c, floor, "z_floor")
            ratio.append(c["fd"] / max(floor["fd"], 1e-12))
        graded = [floor["kid"]] + [sets[f"blur_{s:g}"]["kid"] for s in BLUR_STEPS] + [sets["blurred"]["kid"]]
        row = {"space": space, "n": n, "kid_floor": floor["kid"], "kid_floor_se": floor["kid_se"],
               "kid_z_min": min(z.values()), "hardest_control": min(z, key=z.get), "fd_ratio_min": min(ratio),
               "blur_rank": _spearman(graded), "blur1_z": _z(sets["blur_1"], floor, "z_floor"),
               "ordered": all(v > 0 for v in z.values()) and all(v > 1 for v in ratio)}
        if "blurred_mild" in sets:
            row["structure_z"] = _z(sets["phase_scrambled"], sets["blurred_mild"], "z_mild")
            row["trusted"] = (row["ordered"] and row["kid_z_min"] > RESOLVED_Z and row["structure_z"] > RESOLVED_Z
                              and row["blur_rank"] > 1.0 - 1e-9)
        out.append(row)
    return out


def _z(worse: dict, better: dict, paired: str) -> float:
    """``(KID(worse) - KID(better)) / SE``: the paired z-score ``worse[paired]`` where the row has it (scored by
    :func:`score_feature_spaces`), else the two SEs in quadrature (tables written before the paired SE; that
    overstates the noise, so those z-scores are smaller, never of the other sign)."""
    value = worse.get(paired)
    if value not in (None, ""):
        return float(value)
    return (worse["kid"] - better["kid"]) / max(math.hypot(worse["kid_se"], better["kid_se"]), 1e-12)


def choose_space(summary: Sequence[dict]) -> dict | None:
    """The trusted row of the widest margin, ``min(kid_z_min, structure_z)``, at the largest sample size; None when
    no space is trusted there."""
    if not summary:
        return None
    n = max(r["n"] for r in summary)
    trusted = [r for r in summary if r["n"] == n and r.get("trusted")]
    return max(trusted, key=lambda r: min(r["kid_z_min"], r["structure_z"]), default=None)


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def fmt(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _choice_line(summary: Sequence[dict], channels: Sequence[int] | None, input_size: int | None = None,
                 members: int = 1) -> str:
    chosen = choose_space(summary)
    if chosen is None:
        return ("Chosen space: none. No space is trusted at the largest sample size (every negative control resolved, "
                "structure before texture, blur ranked); no KID of these encoders should decide between models here.")
    depth = f", stage widths {' '.join(map(str, channels))}" if channels else ""
    depth += f", images resized to {input_size} px" if input_size and chosen["space"] != "proxy" else ""
    depth += f", {members} encoders" if members > 1 and chosen["space"] != "proxy" else ""
    return (f"Chosen space: {chosen['space']}{depth} (trusted at n = {chosen['n']}, margin "
            f"{min(chosen['kid_z_min'], chosen['structure_z']):.1f} SE).")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from .data import load_benchmark_data

    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark.feature_space", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--csv-path", default=None, help="OASIS cross-sectional CSV (volume folders)")
    parser.add_argument("--demo-scale", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--kinds", nargs="+", default=["classifier", "autoencoder", "contrastive", "proxy"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--epochs", type=int, default=15, help="domain encoder training epochs")
    parser.add_argument("--feature-size", type=int, default=64)
    parser.add_argument("--channels", nargs="+", type=int, default=None,
                        help="the encoders' stage widths, one stride-2 stage each (default 32 64 128); e.g. 32 64 128 "
                             "128 128 at 128 px, so that the last map is 4 x 4")
    parser.add_argument("--input-size", type=int, default=None,
                        help="the encoders see the images resized to this side (e.g. 32 at 64-128 px: features of "
                             "the anatomy at that scale rather than of the finest texture)")
    parser.add_argument("--members", type=int, default=1,
                        help="each encoder space is this many encoders trained with consecutive seeds, as one "
                             "(metrics.DomainEncoderEnsemble; measured no steadier than one at 64 and 128 px)")
    parser.add_argument("--seed", type=int, default=0, help="the encoders' seed (and the controls', by default)")
    parser.add_argument("--control-seed", type=int, default=None,
                        help="the seed of the control images drawn, if not --seed (to vary the encoder alone)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="runs/feature_space")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_benchmark_data(args.dataset, args.image_size, args.max_train, output, csv_path=args.csv_path,
                               demo_scale=args.demo_scale)
    rows = score_feature_spaces(data, args.kinds, args.sizes, seed=args.seed, epochs=args.epochs,
                                feature_size=args.feature_size, channels=args.channels, input_size=args.input_size,
                                save_dir=output, control_seed=args.control_seed, members=args.members)
    summary = margins(rows)
    columns = ["space", "n", "set", "fd", "kid", "kid_se", "precision", "recall", "coverage", "z_floor", "z_mild"]
    with open(output / "feature_space.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    text = (f"Data: {data['name']}, {len(data['train_images'])} training images, "
            f"{len(data['unseen_images'])} validation, {len(data['reference_images'])} test.\n\n"
            + _table(summary, ["space", "n", "kid_floor", "kid_floor_se", "kid_z_min", "hardest_control",
                               "fd_ratio_min", "blur_rank", "blur1_z", "structure_z", "ordered", "trusted"])
            + "\n\n" + _choice_line(summary, args.channels, args.input_size, args.members) + "\n\n" + _table(rows, columns) + "\n")
    (output / "feature_space.md").write_text(text)
    print(text)
    return summary


if __name__ == "__main__":
    main()

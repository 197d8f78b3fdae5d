"""Paired comparisons of the benchmark: NeuroSQL against every other model of the same seed, as the difference of
their KIDs against the same test images with the standard error of that difference.

Two models' KIDs in one run share their reference images, so the difference of the two is less noisy than the
two SEs combined as if independent would say (:func:`monai_neurosql.metrics.kid_difference`). Each pair is read per
seed (``a`` closer to the real images, ``b`` closer, or not resolved at 2 SE) and over seeds (mean ± std of the
differences), which is what "NeuroSQL wins here" needs to mean.

Pairs: within one (data set, backbone, latent size, conditioning, seed), the anchor is NeuroSQL (its ``default``
variant when there is one, else its first variant in the rows) under the same protocol, or, for models run under
the ``wallclock`` protocol (which give the other models NeuroSQL's training time), NeuroSQL's ``epochs`` row; every
other row of the group is compared with it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PAIRED_FIELDS", "comparison_pairs", "named_pairs", "paired_kid_rows", "paired_table", "paired_verdict"]

PAIRED_FIELDS = ["dataset", "backbone", "latent_size", "conditional", "seed", "space", "a", "b", "num_scored",
                 "kid_a", "kid_b", "difference", "se", "verdict"]

logger = logging.getLogger(__name__)


def paired_verdict(result: Mapping[str, float]) -> str:
    """``"a closer"``, ``"b closer"`` or ``"not resolved"`` for a :func:`~monai_neurosql.metrics.kid_difference`
    result: resolved when the difference is beyond 2 of its own SE."""
    if result["difference"] < -2 * result["se"]:
        return "a closer"
    return "b closer" if result["difference"] > 2 * result["se"] else "not resolved"


def _name(row: Mapping[str, Any]) -> str:
    return f"{row['model']}/{row.get('variant', 'default')}/{row.get('protocol', 'epochs')}"


def _group(row: Mapping[str, Any]) -> tuple:
    return (row["dataset"], row.get("backbone", ""), str(row.get("latent_size", "")), str(row.get("conditional")),
            str(row["seed"]))


def comparison_pairs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(NeuroSQL anchor, other row)`` for every row that has a NeuroSQL anchor of the same seed (module doc)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_group(row)].append(row)
    pairs = []
    for group in groups.values():
        anchors: dict[str, Mapping[str, Any]] = {}
        for row in group:
            protocol = str(row.get("protocol", "epochs"))
            if row["model"] == "neurosql" and (protocol not in anchors or row.get("variant") == "default"):
                anchors[protocol] = row
        for row in group:
            protocol = str(row.get("protocol", "epochs"))
            anchor = anchors.get(protocol) or (anchors.get("epochs") if protocol == "wallclock" else None)
            if anchor is not None and anchor is not row:
                pairs.append((anchor, row))
    return pairs


def named_pairs(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(row a, row b)`` of every (data set, backbone, latent size, conditioning, seed) that holds a row of each
    name (``model/variant/protocol``, e.g. ``ddpm/ema/epochs``): any two settings compared seed by seed, as
    ``python -m monai_neurosql.benchmark ... --pair A B`` does.

    Raises:
        ValueError: a name matches no row (the names in ``rows`` are listed).
    """
    names = sorted({_name(row) for row in rows})
    missing = [name for name in (a, b) if name not in names]
    if missing:
        raise ValueError(f"no results.csv row is named {missing} (model/variant/protocol); the rows are {names}.")
    groups: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        groups[_group(row)].setdefault(_name(row), row)
    return [(group[a], group[b]) for group in groups.values() if a in group and b in group]


def paired_kid_rows(rows: Sequence[Mapping[str, Any]], reference: torch.Tensor, encoders: Mapping[str, Any],
                    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Score every pair (``pairs``; default every :func:`comparison_pairs` pair of ``rows``) from the cells' saved
    ``samples.npz`` in each feature space of ``encoders`` (``{space name: encoder}``): ``KID(a) - KID(b)`` against
    the first ``n`` reference images (``n`` = the smaller sample count), with its SE and a verdict. Pairs whose
    samples are missing are skipped (logged); below KID's minimum count the difference is the text
    ``n<min (...)``."""
    from ..metrics import extract_features

    images: dict[str, torch.Tensor | None] = {}

    def samples(row: Mapping[str, Any]) -> torch.Tensor | None:
        path = Path(str(row.get("cell_dir", ""))) / "samples.npz"
        if str(path) not in images:
            images[str(path)] = torch.from_numpy(np.load(path)["images"]).float() if path.is_file() else None
        return images[str(path)]

    scored = []
    for a, b in comparison_pairs(rows) if pairs is None else pairs:
        if samples(a) is None or samples(b) is None:
            logger.info(f"paired KID: no samples.npz for {_name(a)} or {_name(b)} (seed {a['seed']}); skipped")
        else:
            scored.append((a, b))
    out = []
    for space, encoder in encoders.items():
        reference_features = extract_features(encoder, reference.float())
        features = {key: extract_features(encoder, value) for key, value in images.items() if value is not None}
        for a, b in scored:
            out.append(_paired_row(a, b, space, reference_features,
                                   features[str(Path(str(a["cell_dir"])) / "samples.npz")],
                                   features[str(Path(str(b["cell_dir"])) / "samples.npz")]))
    return out


def _paired_row(a: Mapping[str, Any], b: Mapping[str, Any], space: str, reference_features: torch.Tensor,
                fa: torch.Tensor, fb: torch.Tensor) -> dict[str, Any]:
    """``KID(a) - KID(b)`` of one pair in one space, with its SE and verdict (or ``n<min``)."""
    from ..metrics import MIN_SAMPLES, kid_difference

    n = min(len(fa), len(fb), len(reference_features))
    dataset, backbone, latent, conditional, seed = _group(a)
    row: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "latent_size": latent,
                           "conditional": conditional, "seed": seed, "space": space, "a": _name(a),
                           "b": _name(b), "num_scored": n}
    if n < MIN_SAMPLES["kid"]:
        text = f"n<min ({n}<{MIN_SAMPLES['kid']})"
        row.update({"kid_a": text, "kid_b": text, "difference": text, "se": text, "verdict": "n<min"})
    else:
        ref, fa, fb = reference_features[:n], fa[:n], fb[:n]
        result = kid_difference(ref, fa, fb)
        row.update({"kid_a": result["kid_a"], "kid_b": result["kid_b"],
                    "difference": result["difference"], "se": result["se"], "verdict": paired_verdict(result)})
    return row


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def paired_table(paired: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one line per (data set, backbone, d, conditioning, a, b, feature space) with each seed's
    ``difference ± SE``, the mean ± std of the differences over seeds and the per-seed verdicts counted."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    spaces = list(dict.fromkeys(str(row.get("space", "domain")) for row in paired))
    for row in paired:
        key = (row["dataset"], row["backbone"], str(row["latent_size"]), str(row["conditional"]), row["a"], row["b"],
               str(row.get("space", "domain")))
        groups[key].append(row)
    lines = [("| dataset | backbone | d | cond | a | b | space | KID(a) - KID(b) ± SE, per seed | mean ± std over seeds "
              "| a closer / b closer / not resolved (2 SE) |"), "|" + "---|" * 10]
    for key in sorted(groups, key=lambda k: (*k[:6], spaces.index(k[6]))):
        group = sorted(groups[key], key=lambda r: str(r["seed"]))
        numbers = [r for r in group if not str(r["difference"]).startswith("n<min")]
        per_seed = ", ".join(
            f"s{r['seed']}: {_fmt(float(r['difference']))} ± {_fmt(float(r['se']))}" if r in numbers
            else f"s{r['seed']}: {r['difference']}" for r in group)
        diffs = np.asarray([float(r["difference"]) for r in numbers])
        mean = ("n/a" if diffs.size == 0 else _fmt(diffs.mean()) if diffs.size == 1
                else f"{_fmt(diffs.mean())} ± {_fmt(diffs.std(ddof=1))}")
        counts = " / ".join(str(sum(r["verdict"] == v for r in group)) for v in ("a closer", "b closer",
                                                                                   "not resolved"))
        lines.append(f"| {' | '.join(key)} | {per_seed} | {mean} | {counts} |")
    return "\n".join(lines)

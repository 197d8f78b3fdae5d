"""Markdown tables of the benchmark: mean +- std over seeds per model, the controls beside them, and the flags of
every metric that ranks a negative control at or better than a trained model."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cells import MODELS, VARIANTS

__all__ = ["HEADLINE", "comparison_grids", "control_report", "summarize"]

#: The headline columns, in order: (row key, header). Optional columns appear only when some row has them.
HEADLINE = [
    ("epochs_run", "epochs"), ("best_epoch", "best epoch"),
    ("domain_fid", "domain-FID ↓"), ("kid", "KID ↓"), ("kid_se", "KID SE"),
    ("kid_classifier", "KID classifier space ↓"), ("kid_autoencoder", "KID autoencoder space ↓"),
    ("kid_contrastive", "KID contrastive space ↓"), ("precision", "precision ↑"),
    ("recall", "recall ↑"), ("coverage", "coverage ↑"), ("proxy_fid", "proxy-FID (paper) ↓"),
    ("near_copy_share", "near-copies ↓"), ("ms_ssim", "MS-SSIM (diversity)"),
    ("fid", "FID ↓"), ("fd_imagenet_inception", "FD ImageNet-Inception ↓"), ("fd_radimagenet", "FD RadImageNet ↓"),
    ("fd_medicalnet", "FD MedicalNet ↓"), ("lpips", "LPIPS ↓"),
    ("clf_accuracy", "clf acc ↑"), ("clf_macro_precision", "clf macro prec ↑"), ("clf_macro_recall", "clf macro rec ↑"),
    ("real_only_accuracy", "real-only acc"), ("real_plus_synthetic_accuracy", "real+synthetic acc ↑"),
    ("sec_per_epoch", "s / epoch"), ("train_seconds", "train s"), ("sample_seconds", "sample s"),
    ("peak_rss_mb", "peak MB"),
]


def _number(value: Any) -> float | None:
    if value in ("", None):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _mean_std(values: Sequence[Any]) -> str:
    """``mean ± std`` over seeds; a metric below its minimum count in any seed shows that text instead."""
    texts = [v for v in values if isinstance(v, str) and v.startswith("n<min")]
    if texts:
        return texts[0]
    arr = np.asarray([n for n in map(_number, values) if n is not None], dtype=np.float64)
    if arr.size == 0:
        return "n/a"
    if arr.size == 1:
        return _fmt(arr[0])
    return f"{_fmt(arr.mean())} ± {_fmt(arr.std(ddof=1), 2)}"


def _group_key(row: Mapping[str, Any]) -> tuple:
    return (row["dataset"], str(row.get("protocol", "epochs")), row.get("backbone", ""),
            int(float(row.get("latent_size") or 0)), row["model"], row.get("variant", ""), str(row.get("conditional")))


def summarize(rows: Sequence[Mapping[str, Any]], controls: Sequence[Mapping[str, Any]] = ()) -> str:
    """One markdown table: a line per (dataset, protocol, backbone, latent, model, variant, conditioning) with
    mean ± std over seeds, then the control sets of each data set (one run each)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_group_key(row)].append(row)
    every = list(rows) + list(controls)
    columns = [(k, t) for k, t in HEADLINE if any(_number(r.get(k)) is not None or
                                                 str(r.get(k, "")).startswith("n<min") for r in every)]
    head = ["dataset", "protocol", "model", "backbone", "d", "variant", "cond", "seeds", "params"]
    lines = ["| " + " | ".join(head + [t for _, t in columns]) + " |", "|" + "---|" * (len(head) + len(columns))]
    order = {m: i for i, m in enumerate(MODELS)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], order.get(k[4], 9), k[5], k[6])):
        group = groups[key]
        dataset, protocol, backbone, latent, model, variant, cond = key
        params = _number(group[0].get("params"))
        cells = [_mean_std([r.get(k) for r in group]) for k, _ in columns]
        lines.append(f"| {dataset} | {protocol} | {model} | {backbone} | {latent} | {variant} | {cond} | {len(group)} | "
                     f"{'' if params is None else f'{int(params):,}'} | " + " | ".join(cells) + " |")
    for row in controls:
        cells = [_mean_std([row.get(k)]) for k, _ in columns]
        lines.append(f"| {row['dataset']} | control | {row['model'].split(':', 1)[-1]} |  |  |  |  | 1 |  | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def control_report(rows: Sequence[Mapping[str, Any]], controls: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every metric that breaks the control order, per (dataset, protocol, backbone, latent, conditioning) group
    of trained models (means over seeds), as readable lines; ``[]`` when every metric passes."""
    from ..metrics import METRIC_SPECS, control_flags

    lines = []
    by_dataset: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in controls:
        by_dataset[row["dataset"]][row["model"].split(":", 1)[-1]] = row
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        dataset, protocol, backbone, latent, model, variant, cond = _group_key(row)
        groups[(dataset, protocol, backbone, latent, cond)][f"{model}/{variant}"].append(row)
    for (dataset, protocol, backbone, latent, cond), models in sorted(groups.items()):
        results: dict[str, dict[str, Any]] = {k: dict(v) for k, v in by_dataset.get(dataset, {}).items()}
        for name, group in models.items():
            means = {}
            for metric in METRIC_SPECS:
                values = [_number(r.get(metric)) for r in group]
                values = [v for v in values if v is not None]
                means[metric] = float(np.mean(values)) if values else None
            results[name] = means
        for line in control_flags(results, METRIC_SPECS, list(models)):
            lines.append(f"{dataset}, {protocol}, {backbone}, d={latent}, cond={cond}: {line}")
    return lines


def _display_order(model_variant: tuple[str, str]) -> tuple[int, int, str]:
    """Picture row order: models as in :data:`MODELS`, then each model's variants as in :data:`VARIANTS`."""
    model, variant = model_variant
    known = VARIANTS.get(model, ())
    return (MODELS.index(model) if model in MODELS else len(MODELS),
            known.index(variant) if variant in known else len(known), variant)


def comparison_grids(rows: Sequence[Mapping[str, Any]], reference: torch.Tensor, output: Path) -> list[Path]:
    """Side-by-side sample pictures per (dataset, protocol, backbone, latent, conditioning): a row of real test
    images, then 16 samples of each model's first seed, one row per variant (models in :data:`MODELS` order, each
    model's variants in :data:`VARIANTS` order, ``default`` first; the DDPM, which has no latent size, beside
    every one)."""
    from ..visualize import save_grid_png

    groups: dict[tuple, dict[tuple[str, str], Path]] = defaultdict(dict)
    first_seed: dict[tuple, str] = {}
    for row in rows:
        key = (row["dataset"], str(row.get("protocol", "epochs")), row["backbone"], str(row["latent_size"]),
               str(row["conditional"]))
        model_variant = (row["model"], str(row.get("variant") or "default"))
        if first_seed.setdefault((*key, *model_variant), str(row["seed"])) != str(row["seed"]):
            continue
        groups[key][model_variant] = Path(row["cell_dir"]) / "samples.npz"
    ddpm: dict[tuple, dict[tuple[str, str], Path]] = defaultdict(dict)
    for (dataset, protocol, backbone, _, cond), grids in groups.items():
        ddpm[(dataset, protocol, backbone, cond)].update({mv: p for mv, p in grids.items() if mv[0] == "ddpm"})
    written = []
    for (dataset, protocol, backbone, latent, cond), grids in groups.items():
        for model_variant, path in ddpm[(dataset, protocol, backbone, cond)].items():
            grids.setdefault(model_variant, path)
        panels = [reference[:16]]
        for model_variant in sorted(grids, key=_display_order):
            if grids[model_variant].is_file():
                panels.append(torch.from_numpy(np.load(grids[model_variant])["images"][:16]))
        name = (f"comparison_{dataset}_{protocol}_{backbone}_z{latent}_"
                f"{'cond' if cond == 'True' else 'uncond'}.png")
        written.append(save_grid_png(torch.cat(panels), output / name, nrow=16, scale=2))
    return written

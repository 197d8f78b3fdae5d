"""One evaluation report of a trained generator against held-out real images (used by the bundles' evaluate.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..generate import generate
from ..lattice import QuantileLattice
from ..visualize import save_grid_png
from .features import ProxyFeatureNet, extract_features
from .fid import proxy_fid
from .memorization import memorization_audit
from .precision_recall import precision_recall
from .ssim_metrics import ms_ssim_diversity, paired_ssim

__all__ = ["evaluation_report", "load_images"]


def load_images(dataset: Sequence[dict] | torch.utils.data.Dataset, key: str = "image") -> torch.Tensor:
    """Stack the ``key`` tensors of a (transformed) dataset into ``N x C x [SPATIAL]`` float32."""
    items = [dataset[i][key] for i in range(len(dataset))]
    return torch.stack([torch.as_tensor(getattr(x, "as_tensor", lambda: x)()) for x in items]).float()


def evaluation_report(
    generator: torch.nn.Module,
    lattice: QuantileLattice,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    output_dir: str | os.PathLike,
    num_samples: int = 2048,
    seed: int = 0,
    labels: int | Sequence[int] | None = None,
) -> dict[str, float]:
    """Sample ``num_samples`` images and score them against ``test_images`` (held-out real images): proxy-FID,
    the paper's SSIM over 50 pairs, MS-SSIM diversity (also of the real images, for reference), k-NN
    precision/recall on proxy features, and the memorization audit against ``train_images`` (near-copy share,
    with the worst pairs saved as ``memorization_worst_pairs.png``). Writes ``metrics.json`` and
    ``samples_grid.png`` to ``output_dir`` and returns the metrics.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fake = generate(generator, num_samples, lattice, seed=seed, labels=labels)
    net = ProxyFeatureNet(fake.ndim - 2, fake.shape[1], seed=0)
    if min(len(test_images), len(fake)) > 3:
        pr = precision_recall(extract_features(net, test_images), extract_features(net, fake))
    else:  # k-NN manifolds need more than k = 3 images per set
        pr = {"precision": float("nan"), "recall": float("nan")}
    audit = memorization_audit(fake[: min(len(fake), 512)], train_images, test_images,
                               png_path=out / "memorization_worst_pairs.png")
    metrics = {
        "num_samples": float(num_samples),
        "num_real": float(len(test_images)),
        "proxy_fid": proxy_fid(test_images, fake, num_samples=None, seed=0),
        "ssim": paired_ssim(test_images, fake),
        "ms_ssim_generated": ms_ssim_diversity(fake),
        "ms_ssim_real": ms_ssim_diversity(test_images) if len(test_images) > 1 else float("nan"),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "near_copy_share": audit["near_copy_share"],
        "near_copy_threshold": audit["threshold"],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_grid_png(fake[:64], out / "samples_grid.png", scale=2)
    return metrics

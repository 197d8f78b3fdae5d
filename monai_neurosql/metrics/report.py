"""One evaluation report of a trained generator against held-out real images (used by the bundles' evaluate.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import QuantileLattice, generate
from ..visualize import save_grid_png
from .ssim_metrics import ms_ssim_diversity, paired_ssim

__all__ = ["evaluation_report", "load_images"]


def load_images(dataset: Sequence[dict] | torch.utils.data.Dataset, key: str = "image") -> torch.Tensor:
    """Stack the ``key`` tensors of a (transformed) dataset into ``N x C x [SPATIAL]`` float32."""
    items = [dataset[i][key] for i in range(len(dataset))]
    return torch.stack([torch.as_tensor(x.as_tensor() if hasattr(x, "as_tensor") else x) for x in items]).float()


def evaluation_report(
    generator: torch.nn.Module,
    lattice: QuantileLattice,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    output_dir: str | os.PathLike,
    num_samples: int = 2048,
    seed: int = 0,
    labels: int | Sequence[int] | None = None,
    domain_encoder: str | os.PathLike | torch.nn.Module | None = None,
) -> dict[str, float | str]:
    """Sample ``num_samples`` images and score them against ``test_images`` (held-out real images).

    Scores (:class:`~monai_neurosql.metrics.SampleScorer`): proxy-FID, MS-SSIM diversity (also of the real
    images, for reference), the memorization audit against ``train_images`` (near-copy share, the worst pairs
    saved as ``memorization_worst_pairs.png``), the paper's SSIM over 50 random real/fake pairs (``ssim``), and,
    with a ``domain_encoder`` (a module or a file from :func:`~monai_neurosql.metrics.save_domain_encoder`),
    the domain FID, KID +- SE, precision/recall and density/coverage; without one, precision/recall use the
    proxy features. A metric with fewer images than its minimum (:data:`~monai_neurosql.metrics.MIN_SAMPLES`)
    holds the text ``"n<min (n<minimum)"`` instead of a number. Writes ``metrics.json`` and
    ``samples_grid.png`` to ``output_dir`` and returns the metrics.
    """
    from .domain_features import load_domain_encoder
    from .features import ProxyFeatureNet, extract_features
    from .precision_recall import precision_recall
    from .sample_counts import MIN_SAMPLES, below_minimum
    from .scores import SampleScorer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fake = generate(generator, num_samples, lattice, seed=seed, labels=labels)
    if isinstance(domain_encoder, (str, os.PathLike)):
        domain_encoder = load_domain_encoder(domain_encoder)
    scorer = SampleScorer(test_images, encoder=domain_encoder, train=train_images, audit_samples=512)
    metrics: dict[str, float | str] = {"num_samples": float(num_samples), "num_real": float(len(test_images))}
    scores = scorer(fake, png_path=out / "memorization_worst_pairs.png")
    n = int(scores.pop("num_scored"))
    if domain_encoder is None:
        net = ProxyFeatureNet(fake.ndim - 2, fake.shape[1], seed=0)
        pr = {}
        if n >= MIN_SAMPLES["precision_recall"]:
            pr = precision_recall(extract_features(net, test_images[:n]), extract_features(net, fake[:n]))
        scores.update({k: below_minimum(pr.get(k), n, MIN_SAMPLES["precision_recall"]) for k in ("precision", "recall")})
    metrics.update(scores)
    if scorer.audit is None:  # too few held-out images for thresholds: still show the closest pairs
        from .memorization import nearest_neighbours

        cost, index = nearest_neighbours(fake[:512], train_images)
        worst = cost.argsort()[:16]
        save_grid_png(torch.cat([fake[worst], train_images[index[worst]]]), out / "memorization_worst_pairs.png",
                      nrow=len(worst), scale=2)
    metrics["ms_ssim_generated"] = metrics.pop("ms_ssim")
    metrics["ms_ssim_real"] = ms_ssim_diversity(test_images) if len(test_images) > 1 else float("nan")
    metrics["ssim"] = paired_ssim(test_images, fake)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_grid_png(fake[:64], out / "samples_grid.png", scale=2)
    return metrics

"""One evaluation report of a trained generator against held-out real images (used by the bundles' evaluate.json)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import QuantileLattice, generate
from ..visualize import save_grid_png
from .ssim_metrics import ms_ssim_diversity, paired_ssim

__all__ = ["evaluation_report", "load_images"]

logger = logging.getLogger(__name__)


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
    unseen_images: torch.Tensor | None = None,
    encoder_epochs: int = 15,
) -> dict[str, Any]:
    """Sample ``num_samples`` images and score them against ``test_images`` (held-out real images), beside controls.

    Scores (:class:`~monai_neurosql.metrics.SampleScorer`): with a ``domain_encoder``, the domain FID, KID +- SE,
    precision/recall and density/coverage in its features; the paper's proxy-FID; MS-SSIM diversity (also of the
    real images, for reference); the memorization audit against ``train_images`` (near-copy share, the worst pairs
    saved as ``memorization_worst_pairs.png``); the paper's SSIM over 50 random real/fake pairs (``ssim``, not a
    distribution metric). A metric with fewer images than its minimum
    (:data:`~monai_neurosql.metrics.MIN_SAMPLES`) holds the text ``"n<min (n<minimum)"`` instead of a number.

    ``domain_encoder`` is a module, or a file: loaded when it exists, else trained on ``train_images`` only
    (:func:`~monai_neurosql.metrics.train_domain_encoder`, ``encoder_epochs``) and saved there, so that every
    checkpoint of a run is scored in the same space; with ``unseen_images`` the ``"auto"`` space at 64-128 px is the
    best of :data:`~monai_neurosql.metrics.AUTO_CANDIDATES` encoder seeds by
    :func:`~monai_neurosql.metrics.structure_margin` on them (a warning is logged when even that one ranks anatomy
    before texture by 3 SE or less). Without one, precision/recall use the proxy features.

    With ``unseen_images`` (real images neither trained on nor in ``test_images``, e.g. the validation split) the
    controls of :func:`~monai_neurosql.metrics.control_sets` are scored the same way (``controls``: the floor
    ``real_unseen``, ``real_train`` copies, ``noise``, ``mean_image``, ``blurred``, ``phase_scrambled``), and ``control_flags`` lists
    every metric that ranks a negative control at or better than the model or the floor (logged as warnings):
    against the floor, the metric cannot tell good from bad on this data; against the model, either that or the
    model is no better than the control.

    Writes ``metrics.json`` and ``samples_grid.png`` to ``output_dir`` and returns the metrics.
    """
    from .controls import control_flags, control_sets
    from .domain_features import (
        auto_mismatch,
        load_domain_encoder,
        save_domain_encoder,
        structure_warning,
        train_domain_encoder,
    )
    from .features import extract_features
    from .precision_recall import precision_recall
    from .sample_counts import MIN_SAMPLES, below_minimum
    from .scores import METRIC_SPECS, SampleScorer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(domain_encoder, (str, os.PathLike)):
        path = Path(domain_encoder)
        if path.is_file():
            domain_encoder = load_domain_encoder(path)
            logger.info(f"domain features: {str(path)!r} ({getattr(domain_encoder, 'info', {})})")
            stale = auto_mismatch(domain_encoder, train_images.shape, where=str(path))
            if stale:
                logger.warning(stale)
        else:
            logger.info(f"training the domain encoder on {len(train_images)} real training images "
                        f"({encoder_epochs} epochs); saved to {str(path)!r} and reused by later evaluations")
            domain_encoder = train_domain_encoder(train_images, epochs=encoder_epochs, seed=0,
                                                  validation=unseen_images)
            save_domain_encoder(domain_encoder, path)
        weak = structure_warning(getattr(domain_encoder, "info", {}))
        if weak:
            logger.warning(f"{path}: {weak}")
    fake = generate(generator, num_samples, lattice, seed=seed, labels=labels)
    scorer = SampleScorer(test_images, encoder=domain_encoder, train=train_images, audit_samples=512)
    metrics: dict[str, Any] = {"num_samples": float(num_samples), "num_real": float(len(test_images))}
    scores = scorer(fake, png_path=out / "memorization_worst_pairs.png")
    n = int(scores.pop("num_scored"))

    def proxy_precision_recall(images: torch.Tensor) -> dict[str, float | str]:
        """Precision/recall in the scorer's proxy features (its network and reference features, computed once)."""
        m = min(n, len(images))
        pr = {}
        if m >= MIN_SAMPLES["precision_recall"]:
            pr = precision_recall(scorer.reference_proxy[:m], extract_features(scorer.proxy_net, images[:m]))
        return {k: below_minimum(pr.get(k), m, MIN_SAMPLES["precision_recall"]) for k in ("precision", "recall")}

    if domain_encoder is None:
        scores.update(proxy_precision_recall(fake))
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
    if unseen_images is not None and len(unseen_images) >= 2:
        controls = {}
        for name, images in control_sets(train_images, unseen_images, num=n, seed=seed).items():
            controls[name] = scorer(images)
            controls[name].pop("num_scored")
            if domain_encoder is None:
                controls[name].update(proxy_precision_recall(images))
        metrics["controls"] = controls
        metrics["control_flags"] = control_flags({**controls, "model": metrics}, METRIC_SPECS, ["model"])
        for line in metrics["control_flags"]:
            logger.warning(f"control check: {line}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_grid_png(fake[:64], out / "samples_grid.png", scale=2)
    return metrics

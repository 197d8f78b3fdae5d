"""All distribution metrics of one image set against a fixed real reference, each with its minimum sample count."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from .features import ProxyFeatureNet, extract_features
from .fid import frechet_distance
from .kid import kernel_distance
from .memorization import MemorizationAudit, audit_minimum
from .precision_recall import density_coverage, precision_recall
from .sample_counts import MIN_SAMPLES, below_minimum, minimum_samples
from .ssim_metrics import ms_ssim_diversity

__all__ = ["METRIC_SPECS", "SampleScorer"]

#: ``{metric: (family, higher_is_better)}`` of the scores :class:`SampleScorer` returns, for the control check
#: (:func:`~monai_neurosql.metrics.control_flags`). Density has no better direction (about 1 is ideal) and is
#: left out of the check; MS-SSIM diversity is compared with real images' value, not ordered.
METRIC_SPECS: dict[str, tuple[str, bool]] = {
    "domain_fid": ("distribution", False),
    "kid": ("distribution", False),
    "precision": ("distribution", True),
    "recall": ("distribution", True),
    "coverage": ("distribution", True),
    "proxy_fid": ("distribution", False),
    "near_copy_share": ("memorization", False),
    # KID in the cross-check spaces (``cross_encoders``), when they are scored
    "kid_classifier": ("distribution", False),
    "kid_autoencoder": ("distribution", False),
    "kid_contrastive": ("distribution", False),
}


def _renamed(kid: dict[str, float], prefix: str) -> dict[str, float]:
    """``{"kid", "kid_se"}`` as ``{prefix, prefix + "_se"}``."""
    return {prefix: kid["kid"], f"{prefix}_se": kid["kid_se"]}


class SampleScorer:
    """Scores image sets against one real reference set, in the same feature spaces every time.

    The reference features (domain encoder and the paper's proxy network) and the memorization thresholds are
    computed once; each call scores ``n = min(len(fake), len(reference))`` images against the first ``n``
    reference images (matched counts, as the paper's appendix E asks). A metric whose minimum count
    (:data:`~monai_neurosql.metrics.MIN_SAMPLES`; ``4 x feature size`` for the domain FID) exceeds ``n`` is
    not computed: its value is the text ``"n<min (n<minimum)"``.

    Scores: ``domain_fid``, ``kid`` and ``kid_se``, ``precision``/``recall`` (k = 3) and ``density``/``coverage``
    (k = 5) in the domain features (when an encoder is given); ``kid_<name>`` and ``kid_<name>_se`` in each
    cross-check space (``cross_encoders``); ``proxy_fid`` (the paper's number);
    ``ms_ssim`` (diversity among the images, lower = more diverse); and the memorization audit
    (``near_copy_share`` and ``share_<space>`` per audit space) when training images and
    enough held-out images for its thresholds are given.

    Args:
        reference: real held-out images ``N x C x [SPATIAL]`` in ``[0, 1]`` (the test split).
        encoder: the domain encoder (:func:`~monai_neurosql.metrics.train_domain_encoder`); ``None`` skips the
            domain metrics.
        train: training images, for the memorization audit.
        audit_heldout: held-out images that set the audit's thresholds (default ``reference``).
        audit_samples: at most this many images of a set are audited (the audit's cost is quadratic).
        proxy: compute the paper's proxy-FID.
        cross_encoders: ``{name: encoder}`` of other feature spaces learnt from the same training images (e.g.
            ``{"classifier": ..., "autoencoder": ...}``), scored with KID only: a second opinion, since encoders
            trained for different tasks weigh blur and high-frequency artefacts differently and can rank two
            models in opposite orders (docs/benchmarks.md).
        audit_cache: a folder for the memorization audit's held-out calibration, reused by every scorer of the
            same images and encoder (:class:`~monai_neurosql.metrics.MemorizationAudit` ``cache_dir``).
    """

    def __init__(self, reference: torch.Tensor, encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 train: torch.Tensor | None = None, audit_heldout: torch.Tensor | None = None,
                 audit_samples: int = 1024, proxy: bool = True,
                 cross_encoders: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 audit_cache: str | os.PathLike | None = None) -> None:
        self.reference = reference.float()
        self.cross = {name: (net, extract_features(net, self.reference)) for name, net in (cross_encoders or {}).items()}
        self.encoder = encoder
        self.feature_size = int(getattr(encoder, "feature_size", 0)) if encoder is not None else 0
        self.reference_domain = extract_features(encoder, self.reference) if encoder is not None else None
        self.proxy_net = ProxyFeatureNet(reference.ndim - 2, reference.shape[1], seed=0) if proxy else None
        self.reference_proxy = extract_features(self.proxy_net, self.reference) if proxy else None
        self.audit: MemorizationAudit | None = None
        self.audit_reason = "no training images given"
        if train is not None:
            heldout = self.reference if audit_heldout is None else audit_heldout.float()
            heldout = heldout[:audit_samples]
            minimum = audit_minimum(num_spaces=4 if encoder is not None else 3)
            self.audit_reason = str(below_minimum(None, len(heldout), minimum))
            if len(heldout) >= minimum:
                self.audit = MemorizationAudit(train.float(), heldout, feature_net=encoder, cache_dir=audit_cache)
        self.audit_samples = audit_samples

    def __call__(self, fake: torch.Tensor, png_path: str | os.PathLike | None = None) -> dict[str, Any]:
        """Scores of ``fake`` (see the class docstring); ``png_path`` saves the audit's closest pairs."""
        n = min(len(fake), len(self.reference))
        fake = fake[:n].float()
        scores: dict[str, Any] = {"num_scored": n}

        def gated(names: tuple[str, ...], minimum: int, compute: Callable[[], dict[str, float]]) -> None:
            values = compute() if n >= minimum else {}
            for name in names:
                scores[name] = below_minimum(values.get(name), n, minimum)

        if self.reference_domain is not None:
            ref, gen = self.reference_domain[:n], extract_features(self.encoder, fake)
            gated(("domain_fid",), minimum_samples("domain_fid", self.feature_size),
                  lambda: {"domain_fid": frechet_distance(ref, gen)})
            gated(("kid", "kid_se"), MIN_SAMPLES["kid"], lambda: kernel_distance(ref, gen))
            gated(("precision", "recall"), MIN_SAMPLES["precision_recall"], lambda: precision_recall(ref, gen))
            gated(("density", "coverage"), MIN_SAMPLES["density_coverage"], lambda: density_coverage(ref, gen))
        for name, (net, reference) in self.cross.items():
            gated((f"kid_{name}", f"kid_{name}_se"), MIN_SAMPLES["kid"],
                  lambda name=name, net=net, reference=reference: _renamed(
                      kernel_distance(reference[:n], extract_features(net, fake)), f"kid_{name}"))
        if self.reference_proxy is not None:
            ref_p = self.reference_proxy[:n]
            gated(("proxy_fid",), MIN_SAMPLES["proxy_fid"],
                  lambda: {"proxy_fid": frechet_distance(ref_p, extract_features(self.proxy_net, fake))})
        scores["ms_ssim"] = ms_ssim_diversity(fake, seed=0) if n > 1 else float("nan")
        if self.audit is not None:
            audit = self.audit(fake[: self.audit_samples], png_path=png_path)
            scores["near_copy_share"] = audit["near_copy_share"]
            for space in audit["spaces"]:
                scores[f"share_{space}"] = audit[f"share_{space}"]
        else:
            scores["near_copy_share"] = self.audit_reason
        return scores

"""Control image sets that every report scores beside the models, and the check that metrics order them right.

A metric is only trusted when it ranks the controls the way anyone would: real images the models never saw
(the floor) at least as well as any model, and the negative controls (Gaussian noise, the mean training image,
heavily blurred real images, phase-scrambled real images) worse than a trained model. Copies of training images are the negative control of
the memorization audit: every distribution metric scores them like real images, so only the audit can catch
them. :func:`control_sets` builds the sets; :func:`control_flags` lists every metric that breaks the order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from monai.networks.layers import GaussianFilter

__all__ = [
    "CONTROLS",
    "MILD_BLUR_FRACTION",
    "NEGATIVE_CONTROLS",
    "RESOLVED_Z",
    "STRUCTURE_MIN_IMAGES",
    "blur",
    "control_flags",
    "control_sets",
    "phase_scramble",
    "structure_margin",
]

#: Control names: ``real_unseen`` real images the models never saw (the floor; the validation split),
#: ``real_train`` training images (the copy control), ``noise``, ``mean_image``, ``blurred``, ``phase_scrambled``.
CONTROLS = ("real_unseen", "real_train", "noise", "mean_image", "blurred", "phase_scrambled")

#: Which controls a metric of each family must rank worse than every trained model.
NEGATIVE_CONTROLS: dict[str, tuple[str, ...]] = {
    "distribution": ("noise", "mean_image", "blurred", "phase_scrambled"),
    "memorization": ("real_train", "blurred"),
}

#: The structure test's mildly blurred real images (:func:`structure_margin`): sigma as a fraction of the smallest
#: image side (2 px at 64 x 64, 4 px at 128 x 128: the anatomy kept, the fine detail gone).
MILD_BLUR_FRACTION = 1.0 / 32.0
#: A paired KID z-score above which an order (of two control sets, or of a control and the floor) counts as resolved.
RESOLVED_Z = 3.0
#: The fewest images per set :func:`structure_margin` scores (its KID difference's SE needs them).
STRUCTURE_MIN_IMAGES = 3


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``N x C x [SPATIAL]`` images with standard deviation ``sigma`` pixels (MONAI's
    ``GaussianFilter``, zero padding at the border), clamped to ``[0, 1]``."""
    if sigma <= 0:
        return images.clone()
    return GaussianFilter(images.ndim - 2, float(sigma))(images.float()).clamp(0.0, 1.0)


def phase_scramble(images: torch.Tensor, cutoff: float = 4.0, threshold: float = 0.05,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Real images with their anatomy destroyed and their texture statistics kept: a negative control.

    Each image keeps its Fourier amplitude at every frequency (so its power spectrum: the brightness, contrast and
    grain of its texture) and its phase below ``cutoff`` cycles per image (the coarse layout); the phase above is
    replaced by that of white noise, which scrambles every structure finer than about ``1 / cutoff`` of the image
    (ventricles, sulci, edges) into texture. The result is kept inside the image's foreground (pixels above
    ``threshold``; the background stays as it was) and clamped to ``[0, 1]``. A feature space that ranks these
    images near real ones sees texture statistics, not anatomy (docs/benchmarks.md: three learnt spaces at
    128 px ranked them at or above NeuroSQL's recognizable brains).

    Args:
        images: ``N x C x [SPATIAL]`` images in ``[0, 1]``.
        cutoff: the highest spatial frequency (cycles per image, radially) whose phase is kept.
        threshold: the foreground level.
        generator: the random phases' generator.
    """
    x = images.float()
    dims = tuple(range(2, x.ndim))
    spectrum = torch.fft.rfftn(x, dim=dims)
    sizes = x.shape[2:]
    axes = [torch.fft.fftfreq(n) * n for n in sizes[:-1]] + [torch.fft.rfftfreq(sizes[-1]) * sizes[-1]]
    radius = torch.zeros(spectrum.shape[2:])
    for k, freq in enumerate(axes):
        radius = radius + freq.view([-1 if j == k else 1 for j in range(len(axes))]) ** 2
    high = radius.sqrt() > cutoff
    random_phase = torch.angle(torch.fft.rfftn(torch.rand(x.shape, generator=generator), dim=dims))
    phase = torch.where(high, random_phase, torch.angle(spectrum))
    scrambled = torch.fft.irfftn(torch.polar(spectrum.abs(), phase), s=sizes, dim=dims).clamp(0.0, 1.0)
    return torch.where(x > threshold, scrambled, x)


def control_sets(train: torch.Tensor, unseen: torch.Tensor, num: int, seed: int = 0,
                 blur_sigma: float | None = None) -> dict[str, torch.Tensor]:
    """The control sets, ``num`` images each (the real ones fewer when their split holds fewer), drawn with ``seed``.

    - ``real_unseen``: ``num`` images of ``unseen`` (real images no model trained on, e.g. the validation split;
      the test split stays the reference every set is scored against).
    - ``real_train``: ``num`` training images: a perfect memorizer's output.
    - ``noise``: Gaussian noise with the training images' mean and standard deviation per pixel, clamped to
      ``[0, 1]``.
    - ``mean_image``: the mean training image, ``num`` times.
    - ``blurred``: the ``real_train`` images blurred with ``blur_sigma`` (default: 1/8 of the smallest spatial
      size, e.g. 3.5 px at 28 x 28 and 8 px at 64 x 64).
    - ``phase_scrambled``: the ``real_train`` images through :func:`phase_scramble` (power spectrum and layout
      coarser than a quarter of the image kept, finer structure scrambled into texture, inside the foreground).

    Raises:
        ValueError: ``num < 2`` or an empty split.
    """
    if num < 2 or len(train) < 2 or len(unseen) < 2:
        raise ValueError(f"controls need num >= 2 and two images per split, got num={num}, {len(train)} training and "
                         f"{len(unseen)} unseen images.")
    g = torch.Generator().manual_seed(seed)
    pick_train = torch.randperm(len(train), generator=g)[: min(num, len(train))]
    pick_unseen = torch.randperm(len(unseen), generator=g)[: min(num, len(unseen))]
    real_train = train[pick_train].float()
    mean, std = train.float().mean(0), train.float().std(0)
    noise = (mean + std * torch.randn((num, *train.shape[1:]), generator=g)).clamp(0.0, 1.0)
    sigma = blur_sigma if blur_sigma is not None else min(train.shape[2:]) / 8.0
    return {
        "real_unseen": unseen[pick_unseen].float(),
        "real_train": real_train,
        "noise": noise,
        "mean_image": mean.expand(num, *mean.shape).clone(),
        "blurred": blur(real_train, sigma),
        "phase_scrambled": phase_scramble(real_train, generator=g),
    }


def structure_margin(encoder: torch.nn.Module, train: torch.Tensor, reference: torch.Tensor, num: int | None = None,
                     seed: int = 0) -> float:
    """Does a feature space rank anatomy before texture? ``(KID(phase_scrambled) - KID(blurred_mild)) / SE``.

    ``num`` training images (default: as many as ``reference`` holds), drawn with ``seed``, are phase-scrambled
    (:func:`phase_scramble`: their texture kept, their anatomy gone) and, separately, mildly blurred (sigma
    :data:`MILD_BLUR_FRACTION` of the image side: their anatomy kept, their fine texture gone); both sets are scored
    by KID against ``reference`` in ``encoder``'s features, and the difference is divided by its paired SE
    (:func:`~monai_neurosql.metrics.kid_difference`). Above ~3 the space resolves the anatomy as closer to real; a
    texture-biased space gives a negative value. Only real images and their controls are used, never a model's
    samples, so a space (or an encoder seed) can be chosen by it before any model is looked at
    (``python -m monai_neurosql.benchmark.feature_space``, where it is the ``structure_z`` column).

    Args:
        encoder: the feature network (e.g. a :class:`~monai_neurosql.metrics.DomainEncoder`).
        train: ``N x C x H x W`` real training images in ``[0, 1]`` (the controls are made from them).
        reference: real images not trained on (e.g. the validation split).
        num: images per set.
        seed: the draw of the training images and of the scrambled phases.

    Raises:
        ValueError: fewer than :data:`STRUCTURE_MIN_IMAGES` images in a set.
    """
    from .features import extract_features
    from .kid import kid_difference

    n = min(num or len(reference), len(reference), len(train))
    if n < STRUCTURE_MIN_IMAGES:
        raise ValueError(f"the structure test needs at least {STRUCTURE_MIN_IMAGES} images per set, got {len(train)} training and "
                         f"{len(reference)} reference images (num={num}).")
    sets = control_sets(train, reference, n, seed=seed)
    mild = blur(sets["real_train"], min(train.shape[2:]) * MILD_BLUR_FRACTION)
    ref = extract_features(encoder, reference[:n])
    d = kid_difference(ref, extract_features(encoder, sets["phase_scrambled"]), extract_features(encoder, mild))
    return d["difference"] / max(d["se"], 1e-12)


def _better(a: float, b: float, higher_is_better: bool) -> bool:
    """``a`` at or better than ``b``."""
    return a >= b if higher_is_better else a <= b


def control_flags(
    results: Mapping[str, Mapping[str, float | str]],
    metrics: Mapping[str, tuple[str, bool]],
    models: Sequence[str],
) -> list[str]:
    """Every way a metric breaks the control order, as readable lines (empty: all metrics passed).

    Args:
        results: ``{set name: {metric: value}}`` for the controls (names from :data:`CONTROLS`) and the models;
            non-numeric values (a metric below its minimum count) are skipped.
        metrics: ``{metric: (family, higher_is_better)}``, family ``"distribution"`` or ``"memorization"``.
        models: the trained models' set names in ``results``.

    Returns:
        Lines such as ``"kid: noise (0.012) ranks at or better than gan (0.015)"`` and
        ``"kid: noise (0.012) ranks at or better than the floor real_unseen (0.013)"``.
    """
    def number(name: str, metric: str) -> float | None:
        value = results.get(name, {}).get(metric)
        try:
            value = float(value)  # values read back from a CSV are text; "n<min (...)" is not a number
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) else value

    lines = []
    for metric, (family, higher) in metrics.items():
        floor = number("real_unseen", metric)
        for control in NEGATIVE_CONTROLS[family]:
            value = number(control, metric)
            if value is None:
                continue
            if floor is not None and _better(value, floor, higher):
                lines.append(f"{metric}: {control} ({value:.4g}) ranks at or better than the floor real_unseen "
                             f"({floor:.4g})")
            for model in models:
                score = number(model, metric)
                if score is not None and _better(value, score, higher):
                    lines.append(f"{metric}: {control} ({value:.4g}) ranks at or better than {model} ({score:.4g})")
    return lines

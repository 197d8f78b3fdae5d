"""The domain feature space: a small encoder trained offline on the user's own real training images.

FID-style metrics need features in which real images cluster and defects stand out. ImageNet networks cannot be
downloaded here and the paper's proxy network has random weights, so the benchmark learns its feature space from
the real training split (never from generated images, never from the held-out split): a classifier where labels
exist, an autoencoder or a contrastive (SimCLR) encoder otherwise. The trained encoder is saved with the run and
every model is scored in the same space.

Length: one concept (the domain encoder: network, the three training objectives, save/load); 69 of its lines
are docstrings, and the training objectives share one loop.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from ..generate import training_layout
from ..utils import atomic_write
from .controls import STRUCTURE_MIN_IMAGES

__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_INPUT_SIZE",
    "AUTO_MEMBERS",
    "DOMAIN_ENCODER_KINDS",
    "DomainEncoder",
    "DomainEncoderEnsemble",
    "auto_encoder_settings",
    "auto_mismatch",
    "load_domain_encoder",
    "save_domain_encoder",
    "structure_warning",
    "train_domain_encoder",
]

logger = logging.getLogger(__name__)

#: How the domain encoder can be trained: on labels, by reconstruction, or by contrast between augmented views.
DOMAIN_ENCODER_KINDS = ("classifier", "autoencoder", "contrastive")

#: ``kind="auto"`` on 2D images whose smaller side exceeds this: an autoencoder that sees them resized to this side
#: (see :func:`auto_encoder_settings`).
AUTO_INPUT_SIZE = 32
#: ... and how many such encoders, trained with consecutive seeds, make the space (see :func:`auto_encoder_settings`:
#: three were measured no steadier than one).
AUTO_MEMBERS = 1
#: ... trained with this many consecutive seeds, keeping the one that ranks anatomy before texture most firmly on the
#: validation split (:func:`~monai_neurosql.metrics.structure_margin`; see :func:`auto_encoder_settings`).
AUTO_CANDIDATES = 3


def auto_encoder_settings(image_shape: Sequence[int]) -> dict[str, Any]:
    """The measured best domain encoder for images of ``image_shape`` (``N x C x [SPATIAL]`` or the spatial shape
    alone): ``{"kind": ..., "input_size": ..., "members": ..., "candidates": ...}``.

    - 2D images larger than :data:`AUTO_INPUT_SIZE` (e.g. 64 and 128 px): ``"autoencoder"`` on the images resized to
      32 px. Chosen on the demo brains at 64 and 128 px by the feature-space study before any model was scored: of
      the spaces tried (classifier, autoencoder and contrastive encoders at full size, deeper, and on images resized
      to 32 and 16 px; the paper's proxy features) the only one at both sizes in which every negative control is
      resolved from the real floor and phase-scrambled real images (real texture, no anatomy) rank below mildly
      blurred real ones (anatomy, no fine texture) (``python -m monai_neurosql.benchmark.feature_space``,
      docs/benchmarks.md). Full-size encoders trained on a thousand images describe texture: they ranked
      anatomy-free texture above NeuroSQL's brains.
      One encoder (``"members": 1``), the best of ``"candidates": 3`` seeds. How firmly an encoder ranks the anatomy
      above the texture depends on its training seed: :func:`~monai_neurosql.metrics.structure_margin` of seeds 0-8
      at 64 px against the test split 5.0, 2.5, 9.6, 4.8, 2.8, -1.0, -6.5, 2.2, 1.5 (4 of 9 above 3). Against the
      validation split the same encoders gave 4.2, -0.1, 9.5, 3.6, 2.0, -1.6, -6.8, 1.3, -0.7 (correlation 0.98),
      so the seed is chosen there (real images and their controls only, before any model is looked at): of each
      three consecutive seeds the rule kept the test split's best (9.6, 4.8, 2.2 instead of the first seeds' 5.0,
      4.8, -6.5; ``benchmarks/encoder_seed_selection.py``). Three encoders together (:class:`DomainEncoderEnsemble`)
      were no steadier (seeds 0-2, 3-5, 6-8: 7.7, 2.7, -2.9 at 64 px; 4.7, 1.9, -4.6 at 128 px). Without a
      validation split one encoder (the first seed) is trained. The kept encoder's margin is in
      ``encoder.info["structure_z"]``; the benchmark prints it, and it and the bundles' evaluation warn at 3 or less
      (:func:`structure_warning`).
    - Otherwise (28 px, MedMNIST size, and 3D): ``"contrastive"``, labels or not: it ordered the controls with the
      widest margins on Fashion-MNIST and the demo brains at 28 px (KID z-scores of the negative controls over the
      unseen-real floor 58 vs 34-38 at 2000 Fashion-MNIST images).
    """
    spatial = tuple(image_shape[2:]) if len(image_shape) > 3 else tuple(image_shape)
    if len(spatial) == 2 and min(spatial) > AUTO_INPUT_SIZE:
        return {"kind": "autoencoder", "input_size": AUTO_INPUT_SIZE, "members": AUTO_MEMBERS,
                "candidates": AUTO_CANDIDATES}
    return {"kind": "contrastive", "input_size": None, "members": 1, "candidates": 1}


def structure_warning(info: dict[str, Any]) -> str | None:
    """A warning when a domain encoder's measured structure margin (``info["structure_z"]``, written by
    :func:`train_domain_encoder` when it chose among candidate seeds) is at or below
    :data:`~monai_neurosql.metrics.RESOLVED_Z`: the space does not firmly rank anatomy before texture, so its KID may
    score texture-like samples close to anatomically plausible ones. None when the margin is above it or was not
    measured."""
    from .controls import RESOLVED_Z

    z = info.get("structure_z")
    if z is None or float(z) > RESOLVED_Z:
        return None
    return (f"the domain encoder ranks anatomy before texture by only {float(z):.1f} SE (at most {RESOLVED_Z:g}): its "
            "KID may rank texture-like samples near anatomically plausible ones; read the cross-check spaces and the "
            "sample grids, or check the space with `python -m monai_neurosql.benchmark.feature_space` "
            "(docs/benchmarks.md, 'Choosing the feature space').")


def auto_mismatch(encoder: DomainEncoder | DomainEncoderEnsemble, image_shape: Sequence[int], where: str = "the saved encoder") -> str | None:
    """A warning when a reused ``encoder`` is not the space ``kind="auto"`` now chooses for ``image_shape`` (e.g. a
    full-size contrastive encoder written before the choice changed for 64-128 px images); None when it is."""
    want = {k: v for k, v in auto_encoder_settings(image_shape).items() if k != "candidates"}  # a seed, not a space
    have = {"kind": getattr(encoder, "info", {}).get("kind"), "input_size": encoder.input_size,
            "members": len(getattr(encoder, "members", ())) or 1}
    if have == want:
        return None

    def name(settings: dict[str, Any]) -> str:
        size = f" on the images resized to {settings['input_size']} px" if settings["input_size"] else " at full size"
        kind = settings["kind"] or "unrecorded"
        if settings["members"] > 1:
            return f"{settings['members']} {kind} encoders{size}"
        return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} encoder{size}"

    return (f"{where} is {name(have)}, not the space chosen now for these images ({name(want)}, "
            "metrics.auto_encoder_settings, docs/benchmarks.md); its scores are still comparable with each other, "
            "but delete it (or pass another path) to score in the chosen space.")


class DomainEncoder(nn.Module):
    """Convolutional encoder ``BxCx[SPATIAL] -> (B, feature_size)`` whose output is the domain feature.

    ``[Convolution(stride 2) -> Convolution(stride 1)] x len(channels) -> global average pooling -> Linear ->
    feature`` (MONAI blocks, batch norm, PReLU). The feature is the embedding that metrics use; the training
    head (class logits, a decoder or a projection) is kept separately and not part of the features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        feature_size: feature dimension. Default 64.
        channels: widths of the stride-2 stages. Default ``(32, 64, 128)``.
        input_size: if given, images are first resized to this side (area averaging: an anti-aliased
            downsampling), so the features describe the images at that scale: the layout and the anatomy rather
            than the finest texture. Default None (the images' own size).

    Example::

        encoder = DomainEncoder(2, 1, feature_size=64)
        features = encoder(torch.rand(8, 1, 28, 28))   # (8, 64)
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, feature_size: int = 64,
                 channels: Sequence[int] = (32, 64, 128), input_size: int | None = None) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if feature_size < 2 or not channels:
            raise ValueError(f"feature_size must be >= 2 and channels non-empty, got {feature_size}, {channels}.")
        if input_size is not None and input_size < 2 ** len(channels):
            raise ValueError(f"input_size {input_size} is smaller than the {len(channels)} stride-2 stages need "
                             f"({2 ** len(channels)}); use fewer channels or a larger input_size.")
        self.config = {"spatial_dims": int(spatial_dims), "in_channels": int(in_channels),
                       "feature_size": int(feature_size), "channels": [int(c) for c in channels]}
        if input_size is not None:  # only when set, so files written before the option load unchanged
            self.config["input_size"] = int(input_size)
        self.input_size = None if input_size is None else int(input_size)
        layers: list[nn.Module] = []
        width = in_channels
        for c in channels:
            layers.append(Convolution(spatial_dims, width, c, strides=2, kernel_size=3, act="prelu", norm="batch"))
            layers.append(Convolution(spatial_dims, c, c, strides=1, kernel_size=3, act="prelu", norm="batch"))
            width = c
        self.body = nn.Sequential(*layers)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.embed = nn.Linear(width, feature_size)
        self.feature_size = int(feature_size)
        self.spatial_dims = int(spatial_dims)
        # per-feature standardization, fitted on the training images once the encoder is trained
        self.register_buffer("feature_mean", torch.zeros(feature_size))
        self.register_buffer("feature_std", torch.ones(feature_size))

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float, area-resized to ``input_size`` when one is set and ``x`` is not that size already."""
        x = x.float()
        if self.input_size is not None and tuple(x.shape[2:]) != (self.input_size,) * self.spatial_dims:
            x = F.interpolate(x, size=(self.input_size,) * self.spatial_dims, mode="area")
        return x

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before standardization (what the training heads see)."""
        return self.embed(self.pool(self.body(2.0 * self.resize(x) - 1.0)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized features of images in ``[0, 1]``: ``(B, feature_size)``, zero mean and unit variance per
        feature over the training images, so KID's kernel ``(x . y / F + 1)^3`` sees the scale it was designed
        for whatever the encoder's raw scale is."""
        return (self.raw_features(x) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit_standardization(self, images: torch.Tensor, batch_size: int = 256) -> None:
        """Set the feature mean and standard deviation from ``images`` (the training images)."""
        device = self.feature_mean.device
        raw = torch.cat([self.raw_features(images[i : i + batch_size].to(device))
                         for i in range(0, len(images), batch_size)])
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(raw.std(0).clamp_min(1e-6))


class DomainEncoderEnsemble(nn.Module):
    """Several :class:`DomainEncoder` of one kind (trained with different seeds) as one feature space.

    Their standardized features are concatenated and projected on the ``feature_size`` principal directions of the
    training images' concatenated features (fitted by :meth:`fit_projection`), scaled so that the mean variance per
    feature is 1. In the kernel of KID, ``(x . y / F + 1)^3``, the concatenation averages the members' linear
    kernels (on the demo brains three were measured no steadier across seeds than one: see
    :func:`auto_encoder_settings`; the benchmark's feature-space study takes ``--members``); the projection keeps the feature size, and with
    it the sample counts FID needs, of one member (the members' features are strongly correlated: at 64 px three
    autoencoders' 192 features keep 99.97% of their variance in 64 directions).

    Args:
        members: the trained encoders (same ``spatial_dims``, input channels and ``input_size``).
        feature_size: the projected feature size. Default: the first member's.

    Example::

        space = DomainEncoderEnsemble([train_domain_encoder(x, kind="autoencoder", seed=s) for s in range(3)])
        space.fit_projection(x)
        features = space(x)   # (N, 64)
    """

    def __init__(self, members: Sequence[DomainEncoder], feature_size: int | None = None) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs 2 or more encoders, got {len(members)}.")
        shapes = {(m.spatial_dims, m.config["in_channels"], m.input_size) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"the members must see the same images (spatial_dims, in_channels, input_size), got "
                             f"{sorted(shapes, key=str)}.")
        total = sum(m.feature_size for m in members)
        self.feature_size = int(feature_size or members[0].feature_size)
        if not 2 <= self.feature_size <= total:
            raise ValueError(f"feature_size must be in [2, {total}] (the members' features), got {self.feature_size}.")
        self.members = nn.ModuleList(members)
        self.spatial_dims, self.input_size = members[0].spatial_dims, members[0].input_size
        self.config = {"members": [dict(m.config) for m in members], "feature_size": self.feature_size}
        self.register_buffer("feature_mean", torch.zeros(total))
        self.register_buffer("projection", torch.eye(total)[:, : self.feature_size].clone())
        self.register_buffer("scale", torch.ones(()))

    def concatenated(self, x: torch.Tensor) -> torch.Tensor:
        """The members' standardized features side by side: ``(B, sum of their feature sizes)``."""
        x = self.members[0].resize(x)  # once for all members (they share input_size)
        return torch.cat([m(x) for m in self.members], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images in ``[0, 1]``: ``(B, feature_size)``."""
        return (self.concatenated(x) - self.feature_mean) @ self.projection / self.scale

    @torch.no_grad()
    def fit_projection(self, images: torch.Tensor, batch_size: int = 256) -> float:
        """Fit the projection on ``images`` (the training images); returns the variance fraction it keeps."""
        device = self.feature_mean.device
        f = torch.cat([self.concatenated(images[i : i + batch_size].to(device)).double()
                       for i in range(0, len(images), batch_size)])
        mean = f.mean(0)
        values, vectors = torch.linalg.eigh(torch.cov((f - mean).T))
        order = values.argsort(descending=True)[: self.feature_size]
        kept = values[order].clamp_min(0)
        self.feature_mean.copy_(mean)
        self.projection.copy_(vectors[:, order])
        self.scale.copy_((kept.sum() / self.feature_size).sqrt().clamp_min(1e-6))
        return float(kept.sum() / values.clamp_min(0).sum().clamp_min(1e-12))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view for contrastive training: affine jitter (scale, shift, 2D rotation), flip, contrast, noise."""
    b, nd = x.shape[0], x.ndim - 2

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=generator)

    theta = torch.zeros(b, nd, nd + 1)
    scale = uniform(0.85, 1.15)
    if nd == 2:
        angle = uniform(-0.25, 0.25)
        theta[:, 0, 0], theta[:, 0, 1] = scale * angle.cos(), -scale * angle.sin()
        theta[:, 1, 0], theta[:, 1, 1] = scale * angle.sin(), scale * angle.cos()
    else:
        for k in range(nd):
            theta[:, k, k] = scale
    theta[:, :, nd] = uniform(-0.15, 0.15, nd)
    flip = torch.rand(b, generator=generator) < 0.5
    theta[flip, 0, :] *= -1  # mirror the last spatial axis (grid x coordinate)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    view = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    shape = (b,) + (1,) * (x.ndim - 1)
    view = view * uniform(0.7, 1.3).view(shape).to(x) + uniform(-0.1, 0.1).view(shape).to(x)
    view = view + 0.05 * torch.randn(view.shape, generator=generator).to(x)
    return view.clamp(0.0, 1.0)


def _nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy between two batches of paired views."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    n = a.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, target)


def train_domain_encoder(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    kind: str = "auto",
    feature_size: int = 64,
    channels: Sequence[int] = (32, 64, 128),
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    input_size: int | None = None,
    members: int | None = None,
    candidates: int | None = None,
    validation: torch.Tensor | None = None,
) -> DomainEncoder | DomainEncoderEnsemble:
    """Train a :class:`DomainEncoder` on real training images only, and return it in eval mode (frozen).

    Kinds:

    - ``"classifier"``: cross-entropy on ``labels`` through a linear head on the features.
    - ``"autoencoder"``: L1 reconstruction through a transposed-convolution decoder
      (:class:`~monai_neurosql.networks.ConvGenerator` fed the feature vector).
    - ``"contrastive"``: SimCLR (NT-Xent, temperature 0.2) between two random views (affine jitter, flip,
      contrast, noise) through a 2-layer projection head.
    - ``"auto"``: by image size (:func:`auto_encoder_settings`): an autoencoder on the images resized to 32 px for
      2D images larger than that (64, 128 px), ``"contrastive"`` otherwise; ``input_size`` and ``members`` given
      explicitly win.

    Args:
        images: ``N x C x [SPATIAL]`` real training images in ``[0, 1]``.
        labels: ``(N,)`` class labels (needed by ``"classifier"``).
        kind: one of :data:`DOMAIN_ENCODER_KINDS` or ``"auto"``.
        feature_size, channels, input_size: see :class:`DomainEncoder` (``input_size``: trained and scored on the
            images resized to that side).
        epochs, batch_size, lr: AdamW training settings (cosine schedule).
        seed: initialisation, shuffling and augmentation seed (the global RNG is left untouched).
        device: where to train.
        members: train this many encoders (seeds ``seed``, ``seed + 1``, ...) and return them as one
            :class:`DomainEncoderEnsemble` (its projection fitted on ``images``). Default: 1, or what ``"auto"``
            chooses.
        candidates: train this many encoders (seeds ``seed``, ``seed + 1``, ...) and return the one of the largest
            :func:`~monai_neurosql.metrics.structure_margin` against ``validation`` (anatomy ranked before
            texture; 2D only). Default: 1, or what ``"auto"`` chooses (3 above 32 px when ``validation`` is given,
            else 1).
        validation: real images not trained on (the validation split), needed by ``candidates > 1``.
        channels_last: on the CPU, train with the weights channels-last
            (:func:`~monai_neurosql.generate.training_layout`: 1.13-1.25x faster at 64-128 px,
            ``benchmarks/bench_training_layout.py``); the encoder is returned with its weights as stored either way.

    Raises:
        ValueError: unknown ``kind``, fewer than 2 images, ``"classifier"`` without labels of 2+ classes, or
            ``candidates > 1`` with ``members > 1``, without ``validation`` or on 3D images.

    Returns:
        The trained encoder (or ensemble) with ``encoder.info`` (kind, epochs, final training loss, image count,
        seed, input size, members, candidates; with candidates, ``structure_z`` of the one kept and
        ``candidate_structure_z`` of each).
    """
    if images.ndim not in (4, 5) or len(images) < 2:
        raise ValueError(f"images must be an N x C x [SPATIAL] batch with N >= 2, got shape {tuple(images.shape)}.")
    num_classes = int(labels.max()) + 1 if labels is not None and len(labels) else 0
    if kind == "auto":
        auto = auto_encoder_settings(images.shape)
        kind, input_size = auto["kind"], input_size if input_size is not None else auto["input_size"]
        members = members if members is not None else auto["members"]
        if candidates is None and auto["candidates"] > 1:
            enough = validation is not None and len(validation) >= STRUCTURE_MIN_IMAGES
            candidates = auto["candidates"] if enough and members == 1 else 1
            if candidates == 1:
                logger.info(f"domain encoder: fewer than {STRUCTURE_MIN_IMAGES} validation images given, so one "
                            f"encoder seed is trained rather than the best of {auto['candidates']} by the structure "
                            "test")
    members = 1 if members is None else int(members)
    candidates = 1 if candidates is None else int(candidates)
    if members < 1 or candidates < 1:
        raise ValueError(f"members and candidates must be >= 1, got {members} and {candidates}.")
    if candidates > 1 and (members > 1 or validation is None or len(validation) < STRUCTURE_MIN_IMAGES
                           or images.ndim != 4):
        raise ValueError(f"candidates={candidates} keeps the 2D encoder seed that ranks anatomy before texture on the "
                         f"validation images: pass validation= (at least {STRUCTURE_MIN_IMAGES} real images not trained "
                         "on), members=1 and 2D images (got members="
                         f"{members}, {'no validation' if validation is None else f'{len(validation)} validation images'}"
                         f", images of shape {tuple(images.shape)}).")
    if kind not in DOMAIN_ENCODER_KINDS:
        raise ValueError(f"kind must be 'auto' or one of {DOMAIN_ENCODER_KINDS}, got {kind!r}.")
    if kind == "classifier" and (labels is None or len(torch.unique(labels)) < 2):
        raise ValueError("a classifier domain encoder needs labels with at least 2 classes; use kind='autoencoder' "
                         "or 'contrastive' for unlabelled data.")
    device = torch.device(device)
    trained, losses = [], []
    for member_seed in range(seed, seed + max(members, candidates)):
        generator = torch.Generator().manual_seed(member_seed)
        # the global RNG (initialisation, dropout) is seeded here and restored afterwards: a run is reproducible
        # whatever ran before it in the process
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed)
            encoder, last = _fit_encoder(images, labels, kind, feature_size, channels, num_classes, epochs,
                                         batch_size, lr, device, generator, channels_last, input_size)
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        encoder.fit_standardization(images)
        encoder.info = {"kind": kind, "epochs": int(epochs), "final_loss": last, "num_images": len(images),
                        "seed": member_seed, "input_size": input_size, "members": 1}
        trained.append(encoder)
        losses.append(last)
    kept = ""
    if candidates > 1:  # one of them, with its own seed and loss
        from .controls import structure_margin

        margins = [structure_margin(e, images, validation, seed=seed) for e in trained]
        best = max(range(candidates), key=margins.__getitem__)
        encoder = trained[best]
        info = {**encoder.info, "candidates": candidates, "structure_z": margins[best], "candidate_structure_z": margins}
        kept = (f"; seed {info['seed']} kept of {candidates} (structure margin on {len(validation)} validation "
                f"images: {', '.join(f'{m:.1f}' for m in margins)})")
    else:  # all of them: the first seed and their mean loss
        info = {**trained[0].info, "final_loss": sum(losses) / members, "seed": int(seed), "members": members,
                "candidates": 1}
        if members > 1:
            encoder = DomainEncoderEnsemble(trained).to(device).eval()
            kept = (f"; {members} of them, projected on {encoder.feature_size} directions keeping "
                    f"{100 * encoder.fit_projection(images):.2f}% of their features' variance")
    encoder.info = info
    logger.info(f"domain encoder ({kind}, {feature_size}-d) trained on {len(images)} real training images for "
                f"{epochs} epochs: final loss {info['final_loss']:.4f}{kept}")
    return encoder


def _fit_encoder(images: torch.Tensor, labels: torch.Tensor | None, kind: str, feature_size: int,
                 channels: Sequence[int], num_classes: int, epochs: int, batch_size: int, lr: float,
                 device: torch.device, generator: torch.Generator,
                 channels_last: bool = True, input_size: int | None = None) -> tuple[DomainEncoder, float]:
    """The training loop of :func:`train_domain_encoder` (the caller seeds the global RNG)."""
    spatial_dims, in_channels = images.ndim - 2, images.shape[1]
    encoder = DomainEncoder(spatial_dims, in_channels, feature_size, channels, input_size=input_size)
    if input_size is not None:  # resized once here (in every batch the encoder's own resize is then a no-op); the
        # views and the reconstruction target are at the scale the features see
        images = encoder.resize(images)
    if kind == "classifier":
        head: nn.Module = nn.Sequential(nn.PReLU(), nn.Dropout(0.2), nn.Linear(feature_size, num_classes))
    elif kind == "autoencoder":
        from ..networks import ConvGenerator

        head = ConvGenerator(spatial_dims, feature_size, in_channels, tuple(images.shape[2:]),
                             channels=tuple(reversed([int(c) for c in channels])))
    else:
        head = nn.Sequential(nn.Linear(feature_size, feature_size), nn.ReLU(), nn.Linear(feature_size, 32))
    encoder, head = encoder.to(device), head.to(device)
    training_layout(encoder, channels_last)
    training_layout(head, channels_last)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * math.ceil(len(images) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    labels = labels.long() if labels is not None else None
    last = float("nan")
    encoder.train()
    head.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            if len(idx) < 2:
                continue  # batch norm (and the contrastive pairs) need two images
            x = images[idx].float().to(device)
            if kind == "classifier":
                loss = F.cross_entropy(head(encoder.raw_features(x)), labels[idx].to(device))
            elif kind == "autoencoder":
                loss = F.l1_loss(head(encoder.raw_features(x)), x)
            else:
                a, b = _augment(x.cpu(), generator).to(device), _augment(x.cpu(), generator).to(device)
                loss = _nt_xent(head(encoder.raw_features(a)), head(encoder.raw_features(b)), temperature=0.2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.detach().item() * len(idx), count + len(idx)
        last = total / max(count, 1)
    # stored as a loaded copy will be, so that the encoder in memory and its file give the same features
    return encoder.to(memory_format=torch.contiguous_format), last


def save_domain_encoder(encoder: DomainEncoder | DomainEncoderEnsemble, path: str | os.PathLike) -> Path:
    """Write the encoder or ensemble (config, weights, training info) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": encoder.config, "state_dict": encoder.state_dict(), "info": getattr(encoder, "info", {})}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_domain_encoder(path: str | os.PathLike,
                        device: torch.device | str = "cpu") -> DomainEncoder | DomainEncoderEnsemble:
    """Load an encoder (or ensemble) written by :func:`save_domain_encoder` (``weights_only``), frozen, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a saved domain encoder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no domain encoder at {str(path)!r}; train one with train_domain_encoder and "
                                "save it with save_domain_encoder (the benchmark writes domain_encoder.pt).")
    payload: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= set(payload):
        raise ValueError(f"{str(path)!r} is not a domain encoder file (expected keys 'config' and 'state_dict').")
    config = payload["config"]
    if "members" in config:
        encoder: nn.Module = DomainEncoderEnsemble([DomainEncoder(**c) for c in config["members"]],
                                                   feature_size=config["feature_size"])
    else:
        encoder = DomainEncoder(**config)
    encoder.load_state_dict(payload["state_dict"])
    encoder.info = dict(payload.get("info", {}))
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.to(device).eval()

"""An embedded OASIS-like demo set: simulated subjects built from the real MNI152 brain template.

The MNI152 2009 T1 template and its grey/white-matter maps ship inside ``nilearn``, so the demo needs no
download. Each simulated subject is the template deformed by a smooth random field, with its own intensity,
bias field and noise; the four OASIS classes differ by simulated atrophy (enlarged ventricles, widened sulci,
growing with the class). Slices are written as 8-bit RGB JPEGs in the exact Kaggle OASIS layout
(``<root>/<class>/OAS1_xxxx_MR1_mpr-1_<slice>.jpg``, 248x496), so the real loader path runs on them.

This is simulated data for trying the software, not a model of dementia.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..extras import require
from .oasis import OASIS_CLASSES

__all__ = ["DEMO_VERSION", "build_oasis_demo"]

DEMO_VERSION = 1
_MARKER = ".neurosql_demo.json"


def _template_slices(z_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """T1 (scaled to [0, 1]), grey-matter and CSF maps of the MNI152 template at axial heights ``z_mm``."""
    datasets = require("nilearn.datasets", "bundles", "The OASIS demo data (simulated from nilearn's MNI152 template)")

    t1 = datasets.load_mni152_template(resolution=1)
    affine = t1.affine
    inverse = np.linalg.inv(affine)
    z_index = [round((inverse @ np.array([0.0, 0.0, z, 1.0]))[2]) for z in z_mm]

    def planes(img) -> np.ndarray:
        data = np.asarray(img.get_fdata(), dtype=np.float32)
        # (x, y, z) RAS -> rows = anterior to posterior, cols = right to left (radiological view)
        return np.stack([np.flipud(data[:, :, k].T) for k in z_index])

    t1p = planes(t1)
    t1p = np.clip(t1p / np.percentile(t1p, 99.5), 0, 1)
    gm = planes(datasets.load_mni152_gm_template(resolution=1))
    wm = planes(datasets.load_mni152_wm_template(resolution=1))
    mask = planes(datasets.load_mni152_brain_mask(resolution=1))
    csf = np.clip(mask - gm - wm, 0, 1) * (mask > 0.5)
    return t1p, gm, csf, z_index


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, amplitude: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return amplitude * field / (np.abs(field).max() + 1e-8)


def _subject_slices(rng: np.random.Generator, severity: int, t1: np.ndarray, gm: np.ndarray,
                    csf: np.ndarray) -> np.ndarray:
    """Simulate one subject: atrophy of ``severity`` (0-3), deformation, intensity and noise; ``(S, H, W)``."""
    shape = t1.shape[1:]
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32),
                             indexing="ij")
    # subject-specific smooth deformation, global scale and rotation (same for all slices of the subject)
    angle = np.deg2rad(rng.uniform(-5, 5))
    scale = rng.uniform(0.95, 1.05)
    cr, cc = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    dr, dc = rows - cr, cols - cc
    src_r = cr + (np.cos(angle) * dr - np.sin(angle) * dc) / scale + _smooth_field(rng, shape, 14, 3.0)
    src_c = cc + (np.sin(angle) * dr + np.cos(angle) * dc) / scale + _smooth_field(rng, shape, 14, 3.0)
    # ventricles: radial expansion around the central CSF, growing with the class
    central = np.exp(-((dr / (0.25 * shape[0])) ** 2 + (dc / (0.25 * shape[1])) ** 2))
    strength = severity * 4.0 + rng.uniform(0, 1.0)
    bias = np.exp(_smooth_field(rng, shape, 30, rng.uniform(0.05, 0.15)))
    gamma, contrast = rng.uniform(0.85, 1.15), rng.uniform(0.9, 1.1)
    out = np.empty_like(t1)
    for s in range(t1.shape[0]):
        weight = ndimage.gaussian_filter(csf[s] * central, 3)
        if weight.max() > 0:
            vr, vc = np.unravel_index(np.argmax(weight), shape)
        else:
            vr, vc = cr, cc
        rr, cc_ = rows - vr, cols - vc
        radius = np.sqrt(rr**2 + cc_**2) + 1e-3
        # radial expansion, zero at the centre and peaking at 25 px: d(r) = a (r / s) exp(1/2 - r^2 / (2 s^2)),
        # whose slope stays below 1, so the warp folds nothing
        push = strength * (radius / 25.0) * np.exp(0.5 - radius**2 / (2 * 25.0**2))
        pull_r, pull_c = src_r - push * rr / radius, src_c - push * cc_ / radius
        image = t1[s].copy()
        # sulci: grey matter next to CSF turns to CSF, more with the class
        loss = np.clip((0.2 * severity + rng.uniform(0, 0.05)) * 4 * ndimage.gaussian_filter(csf[s], 1.2) * gm[s], 0, 0.9)
        csf_level = 0.12
        image = image - loss * (image - csf_level)
        warped = ndimage.map_coordinates(image, [pull_r, pull_c], order=1, mode="constant", cval=0.0)
        warped = np.clip(contrast * np.power(np.clip(warped, 0, 1), gamma) * bias, 0, 1)
        noise = rng.normal(0, 0.015, size=(2, *shape))
        out[s] = np.clip(np.sqrt((warped + noise[0]) ** 2 + noise[1] ** 2) * (warped > 0.02), 0, 1)
    return out


def build_oasis_demo(
    root: str | os.PathLike,
    subjects_per_class: Sequence[int] = (16, 10, 8, 6),
    slices_per_subject: int = 8,
    z_range_mm: tuple[float, float] = (0.0, 28.0),
    image_shape: tuple[int, int] = (248, 496),
    seed: int = 0,
) -> Path:
    """Build the demo set under ``root`` once (deterministic for the arguments; seconds), return ``root``.

    Args:
        root: output folder; a complete build there with the same arguments is reused.
        subjects_per_class: subjects of Non Demented, Very mild, Mild, Moderate (imbalanced like OASIS).
        slices_per_subject: axial slices per subject, evenly spaced over ``z_range_mm`` (MNI z in mm).
        image_shape: JPEG size (rows, cols); the Kaggle release uses 248x496.
        seed: simulation seed.
    """
    root = Path(root).expanduser()
    params = {
        "version": DEMO_VERSION, "subjects_per_class": list(subjects_per_class),
        "slices_per_subject": slices_per_subject, "z_range_mm": list(z_range_mm),
        "image_shape": list(image_shape), "seed": seed,
    }
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    from PIL import Image

    if len(subjects_per_class) != len(OASIS_CLASSES):
        raise ValueError(f"subjects_per_class needs {len(OASIS_CLASSES)} counts, got {list(subjects_per_class)}.")
    z_mm = np.linspace(z_range_mm[0], z_range_mm[1], slices_per_subject)
    t1, gm, csf, z_index = _template_slices(z_mm)
    h, w = t1.shape[1:]
    rows, cols = image_shape
    if rows < h or cols < w:
        raise ValueError(f"image_shape {image_shape} is smaller than the template slice {(h, w)}.")
    top, left = (rows - h) // 2, (cols - w) // 2
    subject = 0
    for label, count in enumerate(subjects_per_class):
        folder = root / OASIS_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            subject += 1
            rng = np.random.default_rng([seed, subject])
            slices = _subject_slices(rng, label, t1, gm, csf)
            for k, z in zip(range(slices.shape[0]), z_index):
                canvas = np.zeros(image_shape, dtype=np.uint8)
                canvas[top : top + h, left : left + w] = np.round(255 * slices[k]).astype(np.uint8)
                name = f"OAS1_{subject:04d}_MR1_mpr-1_{z}.jpg"
                Image.fromarray(canvas).convert("RGB").save(folder / name, quality=95)
    marker.write_text(json.dumps(params))
    return root

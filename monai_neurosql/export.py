"""Export a trained generator with ``torch.export``: a ``.pt2`` file that PyTorch loads without this package."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["export_generator", "load_exported_generator"]

logger = logging.getLogger(__name__)


def _example_inputs(network: nn.Module, batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch_size, network.latent_size, generator=g)
    if getattr(network, "num_classes", None) is None:
        return (z,)
    return z, torch.arange(batch_size) % network.num_classes


def export_generator(
    network: nn.Module,
    filepath: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    batch_size: int = 4,
    seed: int = 0,
    atol: float = 1e-5,
) -> Path:
    """Export ``network`` (a generator ``G(z[, labels])``) with ``torch.export`` and check that the saved file
    reproduces it.

    The program is exported on the CPU with a free batch size (``Dim("batch")``), saved with
    ``torch.export.save`` (with ``meta`` and ``data_info`` as the extra files ``metadata.json`` and
    ``data_info.json``, as MONAI's ``ckpt_export`` stores the metadata in TorchScript files), loaded back and run on
    ``batch_size`` seeded latent codes: its images must match the generator's within ``atol``. This replaces
    TorchScript export, which this PyTorch deprecates (``torch.jit.trace``/``script`` warn on every call).

    Args:
        network: the trained generator (a :class:`~monai_neurosql.networks.LatentGenerator`, or DDP around one);
            inputs ``z`` of shape ``(B, latent_size)`` and, for class-conditional generators, ``labels`` ``(B,)``.
        filepath: the ``.pt2`` file to write (its folder is created).
        meta: the bundle metadata to store (``metadata.json``); ``None`` stores nothing.
        data_info: the training data description to store (``data_info.json``: spacing, shape, latent prior).
        batch_size: number of seeded codes of the check (and of the example inputs). Default 4.
        seed: seed of those codes. Default 0.
        atol: largest absolute difference allowed between the generator's and the exported program's images.

    Returns:
        The path written.

    Raises:
        RuntimeError: the exported program's images differ from the generator's by more than ``atol``.

    Example::

        export_generator(generator, "models/model.pt2")
        program = torch.export.load("models/model.pt2").module()
        images = program(torch.randn(16, generator.latent_size))
    """
    module = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    module = copy.deepcopy(module).cpu().eval()
    inputs = _example_inputs(module, batch_size, seed)
    batch = torch.export.Dim("batch", min=1)
    dynamic = {"z": {0: batch}} if len(inputs) == 1 else {"z": {0: batch}, "labels": {0: batch}}
    with torch.no_grad():
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)
        expected = module(*inputs)
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {name: json.dumps(value) for name, value in (("metadata.json", meta), ("data_info.json", data_info))
             if value is not None}
    torch.export.save(program, path, extra_files=extra)
    with torch.no_grad():
        got = torch.export.load(path).module()(*inputs)
    difference = float((got - expected).abs().max())
    if not difference <= atol:
        raise RuntimeError(f"the program exported to {path} gives images that differ from the generator's by "
                           f"{difference:.3g} (> atol={atol}); report this with the network's settings.")
    shape = "x".join(str(s) for s in expected.shape[1:])
    logger.info(f"exported the generator with torch.export to {path} (inputs z (B, {module.latent_size})"
                f"{' and labels (B,)' if len(inputs) == 2 else ''}, any batch size B; outputs B x {shape}); loaded "
                f"back, it reproduces the generator on {batch_size} seeded codes (max difference {difference:.1e})")
    return path


def load_exported_generator(filepath: str | os.PathLike) -> tuple[nn.Module, dict[str, dict]]:
    """Load a file written by :func:`export_generator`: the generator as a module and its extra files.

    Returns:
        ``(module, extras)``: ``module(z[, labels])`` gives the images; ``extras`` maps ``"metadata.json"`` and
        ``"data_info.json"`` to their parsed contents (empty dicts when they were not stored).
    """
    extra = {"metadata.json": "", "data_info.json": ""}
    program = torch.export.load(Path(filepath), extra_files=extra)
    return program.module(), {name: json.loads(text) if text else {} for name, text in extra.items()}

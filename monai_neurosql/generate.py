"""Sampling, decoding and latent inversion with a trained NeuroSQL generator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .cost import pairwise_cost
from .latent_bank import group_positions
from .lattice import QuantileLattice
from .losses import SSIML1Loss

__all__ = ["decode", "device_of", "embed", "eval_mode", "generate", "inference_layout", "labels_tensor",
           "training_layout"]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``module`` in eval mode (batch norm uses running statistics)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


#: Memory format of the fast inference layout per number of spatial dims (see :func:`inference_layout`).
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


@contextlib.contextmanager
def inference_layout(module: nn.Module, enabled: bool = True, spatial_dims: int | None = None) -> Iterator[nn.Module]:
    """Temporarily store ``module``'s weights channels-last, the layout oneDNN's CPU convolutions run fastest in.

    Forward passes give the same values to float rounding (max difference 6e-8 .. 7e-7 on the package's
    generators) and run faster on the CPU: 1.4-2.1x for the ConvGenerator at 28-128 px, 1.7x for the ResNet
    generator, 1.6x in 3D; the FiLM U-Net, about neutral, is left as stored (``G(Q)`` of the assignment, sampling;
    ``benchmarks/bench_decode_layout.py``, docs/benchmarks.md "Speed"). The weights are converted in place (the parameters stay the same objects, so optimizers and
    checkpoints are unaffected) and converted back on exit, also on an exception.

    Args:
        module: a network whose convolutions are all 2D or all 3D (the package's generators, MONAI's
            ``DiffusionModelUNet``); others are left as they are.
        enabled: ``False``: do nothing. The layout changes only when ``module`` lives on the CPU (on CUDA it was
            not measured) and every convolution weight is stored contiguous (a model already laid out by its
            owner is left alone).
        spatial_dims: 2 or 3; default: the network's ``spatial_dims`` attribute, else the dimension of its
            convolution weights (the DDPM baseline's U-Net samples under this layout on the CPU, 1.2x faster at
            28 and 64 px, ``benchmarks/bench_ddpm_sampling.py``).
    """
    fmt = _fast_layout(module, enabled, spatial_dims)
    if fmt is None:
        yield module
        return
    module.to(memory_format=fmt)
    try:
        yield module
    finally:
        module.to(memory_format=torch.contiguous_format)


def _fast_layout(module: nn.Module, enabled: bool, spatial_dims: int | None) -> torch.memory_format | None:
    """The channels-last format to store ``module``'s weights in, or ``None`` when the layout should not change:
    disabled, not on the CPU, no convolutions, convolutions of mixed dimension, a weight already laid out, or a
    part that runs slower so (a submodule whose ``channels_last_faster`` is ``False``: the FiLM U-Net)."""
    weights = [p for p in module.parameters() if p.dim() in (4, 5)]
    if not enabled or not weights or device_of(module).type != "cpu":
        return None
    if any(getattr(m, "channels_last_faster", True) is False for m in module.modules()):
        return None
    if spatial_dims is None:
        spatial_dims = getattr(module, "spatial_dims", None)
    if spatial_dims is None and len({p.dim() for p in weights}) == 1:
        spatial_dims = weights[0].dim() - 2
    fmt = _CHANNELS_LAST.get(spatial_dims)
    if fmt is None or not all(p.is_contiguous() for p in weights):
        return None
    return fmt


def training_layout(module: nn.Module, enabled: bool = True, spatial_dims: int | None = None) -> bool:
    """Store ``module``'s weights channels-last for good (the trainers call it on the CPU before training).

    Training iterations of the benchmark's models then run about 1.25x faster on the CPU at 28-128 px (median;
    1.03-2.5x by model and run; ``benchmarks/bench_training_layout.py``); the losses agree with the stored layout's to float rounding, not to
    the bit. The FiLM U-Net, slower so, is left as stored. The parameters stay the same objects, so optimizers built before are unaffected, and
    ``load_state_dict`` copies values whatever the layout, so checkpoints load into a model of either layout.
    Same rules as :func:`inference_layout` (CPU only; a model already laid out by its owner is left alone).

    Returns:
        whether the layout changed.
    """
    fmt = _fast_layout(module, enabled, spatial_dims)
    if fmt is not None:
        module.to(memory_format=fmt)
    return fmt is not None


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without parameters)."""
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def labels_tensor(labels: int | Sequence[int] | torch.Tensor | None, num: int) -> torch.Tensor | None:
    """Class labels for ``num`` samples as a ``(num,)`` LongTensor: one class for all, or one per sample.

    Args:
        labels: ``None`` (unconditional: returns ``None``), one class index, or ``num`` class indices.
        num: number of samples.

    Raises:
        ValueError: a sequence whose length is not ``num``.

    Example::

        labels_tensor(2, 3)          # tensor([2, 2, 2])
        labels_tensor([0, 1, 0], 3)  # tensor([0, 1, 0])
    """
    if labels is None:
        return None
    if isinstance(labels, int):
        return torch.full((num,), labels, dtype=torch.long)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != num:
        raise ValueError(f"got {labels.numel()} labels for {num} samples; pass one label or one per sample.")
    return labels


@torch.no_grad()
def decode(
    generator: nn.Module,
    codes: torch.Tensor,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """``G(codes)`` in eval mode, in batches: ``(N, d) -> N x C x [SPATIAL]`` on ``device`` (default: G's).

    Args:
        generator: the generator.
        codes: ``(N, d)`` latent codes.
        labels: class per code (or one class for all) for class-conditional generators.
        batch_size: codes per forward pass.
        device: where the images are returned; the forward passes run on the generator's device.
        channels_last: on the CPU, run the passes with the weights channels-last (:func:`inference_layout`:
            the same images to float rounding, up to 2x faster); ``False``: as stored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    run_on = device_of(generator)
    out_device = run_on if device is None else torch.device(device)
    labels_t = labels_tensor(labels, codes.shape[0])
    chunks = []
    with eval_mode(generator), inference_layout(generator, channels_last):
        for start in range(0, codes.shape[0], batch_size):
            z = codes[start : start + batch_size].to(run_on, torch.float32)
            lab = None if labels_t is None else labels_t[start : start + batch_size].to(run_on)
            chunks.append(generator(z, lab).float().to(out_device).contiguous())
    if not chunks:
        raise ValueError("decode needs at least one code.")
    return torch.cat(chunks)


def generate(
    generator: nn.Module,
    num_samples: int,
    lattice: QuantileLattice,
    seed: int = 0,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = "cpu",
) -> torch.Tensor:
    """Synthetic images from codes drawn from the lattice's prior (the paper's *sampled-z* mode).

    Args:
        generator: a trained generator.
        num_samples: number of images.
        lattice: the training lattice (its prior and dimension are used; e.g. ``bank.lattice``).
        seed: sampling seed; the same seed gives the same images on every device.
        labels: a class, or one class per sample, for class-conditional generators.
        batch_size: images per forward pass.
        device: where the images are returned. Default CPU.

    Returns:
        ``num_samples x C x [SPATIAL]`` float tensor in the generator's output range (``[0, 1]``).

    Example::

        images = generate(generator, 16, bank.lattice, seed=0)              # unconditional
        images = generate(generator, 16, bank.lattice, seed=0, labels=2)    # class 2
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    codes = lattice.sample(num_samples, generator=torch.Generator().manual_seed(int(seed)))
    return decode(generator, codes, labels, batch_size, device)


def embed(
    generator: nn.Module,
    images: torch.Tensor,
    lattice: QuantileLattice,
    steps: int = 50,
    lr: float = 0.05,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 256,
    loss_function: nn.Module | None = None,
) -> torch.Tensor:
    """Latent codes for (unseen) images: the best lattice point, refined by gradient steps on ``z``.

    This is NeuroSQL's dimensionality-reduction use: with ``G`` frozen, each image gets the lattice point whose
    decoding has the lowest cost under ``loss_function`` (for conditional generators among decodings of its own
    class), then ``steps`` Adam steps minimize that loss over ``z`` alone.

    Args:
        generator: a trained generator (not modified).
        images: ``N x C x [SPATIAL]`` images in ``[0, 1]``.
        lattice: candidate starting codes (e.g. ``bank.lattice``).
        steps: gradient steps on ``z`` (0 keeps the best lattice point).
        lr: Adam learning rate for ``z``.
        labels: classes of the images for class-conditional generators.
        batch_size: decoding batch size.
        loss_function: the loss, e.g. the trainer's ``loss_function``; an :class:`~monai_neurosql.SSIML1Loss` also
            sets the cost of the lattice search (:func:`~monai_neurosql.pairwise_cost`). Default
            ``SSIML1Loss(spatial_dims, reduction="none")``.

    Returns:
        ``(N, d)`` codes on the CPU.
    """
    device = device_of(generator)
    images = images.to(device).float()
    n = images.shape[0]
    labels_t = labels_tensor(labels, n)
    loss_fn = loss_function or SSIML1Loss(images.ndim - 2, reduction="none")
    points = lattice.points.to(device)
    codes = torch.empty(n, lattice.dim, device=device)
    cost_loss = loss_fn if isinstance(loss_fn, SSIML1Loss) else None
    groups = [(None, torch.arange(n))] if labels_t is None else group_positions(labels_t)
    for g, rows in groups:
        decoded = decode(generator, points, g, batch_size)
        cost = pairwise_cost(images[rows.to(device)], decoded, loss=cost_loss)
        codes[rows.to(device)] = points[cost.argmin(dim=1)]
    if steps > 0:
        z = codes.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        lab = None if labels_t is None else labels_t.to(device)
        params = [p.requires_grad for p in generator.parameters()]
        for p in generator.parameters():
            p.requires_grad_(False)
        try:
            with eval_mode(generator):
                for _ in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    loss_fn(generator(z, lab), images).sum().backward()
                    optimizer.step()
        finally:
            for p, flag in zip(generator.parameters(), params):
                p.requires_grad_(flag)
        codes = z.detach()
    return codes.cpu()

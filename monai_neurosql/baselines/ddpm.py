"""DDPM baseline (paper appendix I): MONAI's DiffusionModelUNet and DDPMScheduler (T = 1000, linear betas),
its width scaled so that its parameter count is within 10% of the generator's, sampled with MONAI's
``DiffusionInferer`` in 100 steps from seeded noise (DDIM steps, since 100 < T; the global RNG is not used)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from monai.utils import CommonKeys
from torch import nn

from ..engines.utils import check_finite_loss, optimizer_step
from ..extras import require
from ..generate import eval_mode, inference_layout
from ..networks import count_parameters
from .common import BaselineTrainer, prepare_images

__all__ = ["CPU_SAMPLE_BATCH", "NOISE_BLOCK", "DDPMTrainer", "SeededDDPMScheduler", "matched_diffusion_unet"]

#: images per block of seeded start noise in :meth:`DDPMTrainer.sample` (and its batch off the CPU)
NOISE_BLOCK = 256
#: images per DDIM batch on the CPU: at 64 px 19 ms per image and step against 52 ms in batches of 256 (one thread;
#: benchmarks/bench_ddpm_sampling.py)
CPU_SAMPLE_BATCH = 8


class SeededDDPMScheduler(DDPMScheduler):
    """A ``DDPMScheduler`` whose reverse steps draw their noise from its own ``generator``.

    MONAI's ``DiffusionInferer.sample`` calls ``scheduler.step(output, t, image)`` without a generator, so the
    step noise would come from the global RNG; this scheduler supplies ``self.generator`` (on the sample's
    device) when none is passed, making the whole reverse process a function of the seed.
    """

    def __init__(self, *args, generator: torch.Generator | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = generator

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return super().step(model_output, timestep, sample, generator=generator or self.generator)


def _ema(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor, decay: float) -> None:
    """One exponential-moving-average step of all weights with the usual warm-up (the average follows early weights
    closely): the rate is read once per step, not once per tensor (a device sync each on the GPU)."""
    n = float(num_averaged)
    torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))


def _unet(spatial_dims: int, in_channels: int, width: int, num_classes: int | None) -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels, num_res_blocks=1,
        channels=(width, 2 * width, 2 * width), attention_levels=(False, False, True), norm_num_groups=4,
        num_head_channels=8, num_class_embeds=num_classes,
    )


def matched_diffusion_unet(spatial_dims: int, in_channels: int, target_params: int, num_classes: int | None = None,
                           tolerance: float = 0.1, widths: Sequence[int] = tuple(range(4, 257, 4))
                           ) -> DiffusionModelUNet:
    """The compact DiffusionModelUNet (widths ``(w, 2w, 2w)``, one residual block per level, attention at the
    lowest resolution) whose parameter count is closest to ``target_params``; the paper matches within 10%.

    Raises:
        ImportError: ``einops`` (the ``ddpm`` extra) is missing. ValueError: no width in ``widths`` lands within
            ``tolerance`` of the target.
    """
    require("einops", "ddpm", "The DDPM baseline (attention blocks of MONAI's DiffusionModelUNet)")
    best, best_gap = None, float("inf")
    for width in widths:
        with torch.device("meta"):
            params = count_parameters(_unet(spatial_dims, in_channels, width, num_classes))
        gap = abs(params - target_params) / target_params
        if gap < best_gap:
            best, best_gap = width, gap
    if best_gap > tolerance:
        raise ValueError(f"no DiffusionModelUNet width in {widths[0]}..{widths[-1]} has a parameter count within "
                         f"{100 * tolerance:.0f}% of {target_params}; closest is width {best} ({100 * best_gap:.0f}% "
                         "off). Adjust the generator or the widths.")
    return _unet(spatial_dims, in_channels, best, num_classes)


class DDPMTrainer(BaselineTrainer):
    """Noise-prediction DDPM training (MSE on epsilon at a uniform random step ``t < T``); images are mapped to
    ``[-1, 1]`` internally. ``sample`` runs the reverse process in ``num_inference_steps`` (100) steps: with DDIM
    (eta = 0, MONAI's ``DDIMScheduler``) when that is fewer than ``T``, the DDPM posterior steps when it equals
    ``T``. MONAI's ``DDPMScheduler.step`` always steps from ``t`` to ``t - 1``, whatever the stride of its
    timesteps, so a 100-step DDPM chain of a ``T = 1000`` model removes a tenth of the noise and returns noise
    (the same bug diffusers fixed in its PR 2076); DDIM is the strided sampler of a DDPM-trained model.

    Args:
        unet: the denoiser (:func:`matched_diffusion_unet`).
        optimizer: optimizer over ``unet.parameters()``.
        num_train_timesteps: T. Default 1000. num_inference_steps: sampling steps. Default 100.
        spatial_shape, in_channels: the image shape to sample.
        ema_decay: when given (in ``(0, 1)``), ``sample`` uses an exponential moving average of the weights
            (``self.ema``, a ``torch.optim.swa_utils.AveragedModel``) updated after every optimizer step with the
            usual warm-up ``min(ema_decay, (1 + n) / (10 + n))`` (``n`` updates so far), as DDPM implementations
            sample (Ho et al. 0.9999 over 800k steps; shorter runs use 0.999 or less). Default ``None``: the raw
            weights.
        Others: see :class:`~monai_neurosql.baselines.common.BaselineTrainer`.
    """

    def __init__(self, device, max_epochs: int, train_data_loader: Iterable, unet: nn.Module,
                 optimizer: torch.optim.Optimizer, spatial_shape: Sequence[int], in_channels: int = 1,
                 num_train_timesteps: int = 1000, num_inference_steps: int = 100, ema_decay: float | None = None,
                 **kwargs) -> None:
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) (e.g. 0.999), or be None for no average; got {ema_decay}.")
        conditional = getattr(unet, "num_class_embeds", None) is not None
        super().__init__(device, max_epochs, train_data_loader, conditional=conditional, **kwargs)
        self.unet = unet.to(self.state.device)
        self._lay_out(self.unet, spatial_dims=len(spatial_shape))  # before the average copies it
        self.ema = None
        if ema_decay is not None:
            self.ema = torch.optim.swa_utils.AveragedModel(self.unet, multi_avg_fn=functools.partial(_ema, decay=ema_decay),
                                                           use_buffers=True)
            self.ema.requires_grad_(False)
        self.optimizer = optimizer
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, schedule="linear_beta")
        self.num_inference_steps = num_inference_steps
        self.spatial_shape, self.in_channels = tuple(spatial_shape), in_channels
        self.scaler = self.make_scaler()
        self._attach_handlers()

    def _iteration(self, engine: DDPMTrainer, batchdata) -> dict:
        images, labels = prepare_images(batchdata, engine.state.device)
        labels = labels if engine.conditional else None
        x0 = 2.0 * images - 1.0
        noise = torch.randn_like(x0)
        t = torch.randint(0, engine.scheduler.num_train_timesteps, (x0.shape[0],), device=x0.device).long()
        engine.unet.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp):
            pred = engine.unet(engine.scheduler.add_noise(x0, noise, t), timesteps=t, class_labels=labels)
        loss = F.mse_loss(pred.float(), noise)
        check_finite_loss(loss, engine)
        optimizer_step(engine, loss, engine.optimizer, engine.unet.parameters(), engine.grad_clip_norm, engine.scaler,
                       fire_events=False)
        if engine.ema is not None:
            engine.ema.update_parameters(engine.unet)
        return {CommonKeys.IMAGE: images, CommonKeys.LOSS: loss.item()}

    @torch.no_grad()
    def sample(self, num: int, seed: int = 0, labels: torch.Tensor | None = None,
               batch_size: int | None = None, channels_last: bool = True) -> torch.Tensor:
        """``num`` images by the reverse process (MONAI's ``DiffusionInferer.sample``) from seeded noise, in
        ``[0, 1]``, on the CPU, from the averaged weights when the trainer keeps them (``ema_decay``): DDIM steps
        when ``num_inference_steps < T``, else the DDPM chain with a :class:`SeededDDPMScheduler` seeded alike. The
        same seed gives the same images, whatever the global RNG holds.

        ``batch_size``: images per reverse-chain batch; default :data:`CPU_SAMPLE_BATCH` for DDIM on the CPU (at
        64 px 2.7x faster per image than 256, whose activations outgrow the caches:
        ``benchmarks/bench_ddpm_sampling.py``), else :data:`NOISE_BLOCK`. The start noise is drawn in blocks of
        :data:`NOISE_BLOCK` images whatever the batch, so DDIM images of a seed do not depend on ``batch_size``
        (to float rounding); the DDPM chain draws its step noise per batch, so its images do.

        ``channels_last``: on the CPU, sample with the U-Net's weights channels-last
        (:func:`~monai_neurosql.generate.inference_layout`; the same images, about 1.2x faster at 28 and 64 px)."""
        device = self.state.device
        g = torch.Generator(device=device).manual_seed(seed)
        steps = self.scheduler.num_train_timesteps
        strided = self.num_inference_steps < steps
        if strided:  # DDIM (deterministic given the seeded start noise)
            scheduler = DDIMScheduler(num_train_timesteps=steps, schedule="linear_beta", clip_sample=True)
        else:
            scheduler = SeededDDPMScheduler(num_train_timesteps=steps, schedule="linear_beta", generator=g)
        if batch_size is None:
            batch_size = CPU_SAMPLE_BATCH if strided and torch.device(device).type == "cpu" else NOISE_BLOCK
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of images, got {batch_size}.")
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        inferer = DiffusionInferer(scheduler)
        unet = self.ema.module if self.ema is not None else self.unet
        out = []
        with eval_mode(unet), inference_layout(unet, channels_last, spatial_dims=len(self.spatial_shape)):
            for block in range(0, num, NOISE_BLOCK):
                noise = torch.randn(min(NOISE_BLOCK, num - block), self.in_channels, *self.spatial_shape,
                                    generator=g, device=device)
                for offset in range(0, len(noise), batch_size):
                    start, chunk = block + offset, noise[offset : offset + batch_size]
                    model = unet
                    if labels is not None:
                        model = functools.partial(
                            unet, class_labels=torch.as_tensor(labels)[start : start + len(chunk)].to(device))
                    x = inferer.sample(chunk, model, scheduler, verbose=False)
                    out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        return torch.cat(out)

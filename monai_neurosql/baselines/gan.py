"""GAN baseline (paper appendix I): the same generator, a light four-layer CNN discriminator, non-saturating
BCE-with-logits losses, sharing optimizer, schedule and gradient clipping with NeuroSQL."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from monai.utils import CommonKeys

from ..engines.utils import check_finite_loss, optimizer_step
from ..generate import decode
from .common import BaselineTrainer, prepare_images

__all__ = ["Discriminator", "GANTrainer"]


class Discriminator(nn.Module):
    """Four stride-2 convolutions (32, 64, 128, 1 channels), batch norm and leaky ReLU in between, then global
    average pooling to one logit. 2D or 3D, any image size; class-conditional models get one-hot class
    channels concatenated to the image.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128),
                 num_classes: int | None = None) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        self.num_classes = num_classes
        widths = [in_channels + (num_classes or 0), *channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(conv(a, b, kernel_size=3, stride=2, padding=1))
            if i > 0:
                layers.append(norm(b))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(conv(widths[-1], 1, kernel_size=3, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels.")
            onehot = F.one_hot(labels.long(), self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot.reshape(*onehot.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])], 1)
        return self.body(x).flatten(1).mean(1)


class GANTrainer(BaselineTrainer):
    """One discriminator step then one generator step per batch, with the non-saturating objective:
    ``L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)``, ``L_G = BCE(D(G(z)), 1)``, ``z ~ N(0, I)``.

    Args:
        generator: the generator (shared backbone).
        discriminator: a :class:`Discriminator`.
        g_optimizer, d_optimizer: their optimizers (AdamW in the benchmark).
        Others: see :class:`~monai_neurosql.baselines.common.BaselineTrainer`.
    """

    def __init__(self, device, max_epochs: int, train_data_loader: Iterable, generator: nn.Module,
                 discriminator: nn.Module, g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer,
                 **kwargs) -> None:
        conditional = getattr(generator, "num_classes", None) is not None
        super().__init__(device, max_epochs, train_data_loader, conditional=conditional, **kwargs)
        self.generator = generator.to(self.state.device)
        self.discriminator = discriminator.to(self.state.device)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.g_scaler, self.d_scaler = self.make_scaler(), self.make_scaler()
        self._attach_handlers()

    def _iteration(self, engine: GANTrainer, batchdata) -> dict:
        images, labels = prepare_images(batchdata, engine.state.device)
        labels = labels if engine.conditional else None
        z = torch.randn(images.shape[0], engine.generator.latent_size, device=engine.state.device)
        engine.generator.train()
        engine.discriminator.train()
        bce = F.binary_cross_entropy_with_logits
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp):
            fake = engine.generator(z, labels)
            real_logits = engine.discriminator(images, labels).float()
            fake_logits = engine.discriminator(fake.detach(), labels).float()
        d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        check_finite_loss(d_loss, engine, "discriminator loss")
        engine.d_optimizer.zero_grad(set_to_none=True)
        optimizer_step(engine, d_loss, engine.d_optimizer, engine.discriminator.parameters(), engine.grad_clip_norm,
                       engine.d_scaler, fire_events=False)
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp):
            gen_logits = engine.discriminator(fake, labels).float()
        g_loss = bce(gen_logits, torch.ones_like(gen_logits))
        check_finite_loss(g_loss, engine, "generator loss")
        engine.g_optimizer.zero_grad(set_to_none=True)
        optimizer_step(engine, g_loss, engine.g_optimizer, engine.generator.parameters(), engine.grad_clip_norm,
                       engine.g_scaler, fire_events=False)
        return {CommonKeys.IMAGE: images, CommonKeys.PRED: fake.detach(), CommonKeys.LOSS: g_loss.item(),
                "g_loss": g_loss.item(), "d_loss": d_loss.item()}

    def sample(self, num: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` images from ``z ~ N(0, I)`` (seeded), on the CPU."""
        z = torch.randn(num, self.generator.latent_size, generator=torch.Generator().manual_seed(seed))
        return decode(self.generator, z, labels, device="cpu")

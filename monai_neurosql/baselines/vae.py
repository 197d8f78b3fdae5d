"""VAE baseline (paper appendix I): the same generator as decoder, an MLP encoder on flattened pixels,
SSIM+L1 reconstruction plus beta * KL with beta = 0.005."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import torch
from monai.utils import CommonKeys
from torch import nn

from .. import SSIML1Loss, decode
from ..engines.utils import check_finite_loss, optimizer_step
from .common import BaselineTrainer, prepare_images

__all__ = ["VAE", "MLPEncoder", "VAETrainer"]


class MLPEncoder(nn.Module):
    """Flattened pixels (and a one-hot class for conditional models) -> MLP -> ``(mu, logvar)`` of size ``d``.

    Args:
        in_shape: image shape ``C x [SPATIAL]``.
        latent_size: ``d``.
        hidden: hidden widths. Default ``(512, 256)``, modest as in the paper.
        num_classes: for class-conditional VAEs.
    """

    def __init__(self, in_shape: Sequence[int], latent_size: int, hidden: Sequence[int] = (512, 256),
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        widths = [math.prod(in_shape) + (num_classes or 0), *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], 2 * latent_size)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.flatten(1)
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("this encoder is class-conditional: pass labels.")
            h = torch.cat([h, nn.functional.one_hot(labels.long(), self.num_classes).to(h.dtype)], dim=1)
        mu, logvar = self.head(self.body(h)).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)


class VAE(nn.Module):
    """Encoder + the NeuroSQL generator as decoder; prior ``N(0, I)``."""

    def __init__(self, generator: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.encoder = encoder

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        mu, logvar = self.encoder(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.generator(z, labels), mu, logvar


class VAETrainer(BaselineTrainer):
    """Trains a :class:`VAE` with ``loss = SSIML1Loss(recon, x) + beta * KL(q(z|x) || N(0, I))`` (KL summed over
    latent dimensions, averaged over the batch), AdamW, gradient clipping; the output dict carries ``"loss"``,
    ``"recon_loss"``, ``"kl"`` and ``"pred"``.

    Args:
        vae: the :class:`VAE`.
        optimizer: optimizer over ``vae.parameters()``.
        beta: KL weight. Default 0.005 (paper appendix I).
        loss_function: reconstruction loss; default ``SSIML1Loss``.
        Others: see :class:`~monai_neurosql.baselines.common.BaselineTrainer`.
    """

    def __init__(self, device, max_epochs: int, train_data_loader: Iterable, vae: VAE,
                 optimizer: torch.optim.Optimizer, beta: float = 0.005, loss_function: nn.Module | None = None,
                 **kwargs) -> None:
        conditional = getattr(vae.generator, "num_classes", None) is not None
        super().__init__(device, max_epochs, train_data_loader, conditional=conditional, **kwargs)
        self.vae = vae.to(self.state.device)
        self._lay_out(self.vae, spatial_dims=getattr(vae.generator, "spatial_dims", None))
        self.generator = self.vae.generator
        self.optimizer = optimizer
        self.beta = beta
        self.loss_function = loss_function or SSIML1Loss(getattr(vae.generator, "spatial_dims", 2))
        self.scaler = self.make_scaler()
        self._attach_handlers()

    def _iteration(self, engine: VAETrainer, batchdata) -> dict:
        images, labels = prepare_images(batchdata, engine.state.device)
        labels = labels if engine.conditional else None
        engine.vae.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp):
            recon, mu, logvar = engine.vae(images, labels)
        recon_loss = engine.loss_function(recon.float(), images)
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(1).mean()
        loss = recon_loss + engine.beta * kl
        check_finite_loss(loss, engine)
        optimizer_step(engine, loss, engine.optimizer, engine.vae.parameters(), engine.grad_clip_norm, engine.scaler,
                       fire_events=False)
        return {CommonKeys.IMAGE: images, CommonKeys.PRED: recon.detach(), CommonKeys.LOSS: loss.item(),
                "recon_loss": recon_loss.item(), "kl": kl.item()}

    def sample(self, num: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` images from ``z ~ N(0, I)`` (seeded), on the CPU."""
        z = torch.randn(num, self.generator.latent_size, generator=torch.Generator().manual_seed(seed))
        return decode(self.generator, z, labels, device="cpu")

"""GAN baseline (paper appendix I) tuned as the GAN community tunes it: the shared generator, a DCGAN-style
discriminator, and either DCGAN's recipe (non-saturating BCE, Adam lr 2e-4, betas (0.5, 0.999), N(0, 0.02)
initialization, no gradient clipping) or hinge loss with spectral normalization (SNGAN)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from monai.utils import CommonKeys
from torch import nn

from .. import decode
from ..engines.utils import check_finite_loss, optimizer_step
from .common import BaselineTrainer, prepare_images

__all__ = ["GAN_LOSSES", "Discriminator", "GANTrainer", "dcgan_init"]

#: Adversarial objectives: DCGAN's non-saturating BCE, or the hinge loss of SNGAN/BigGAN.
GAN_LOSSES = ("bce", "hinge")


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN's initialization (Radford et al. 2016): convolution and linear weights ~ N(0, 0.02), batch-norm
    weights ~ N(1, 0.02), biases 0. Applied in place; returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class Discriminator(nn.Module):
    """DCGAN-style discriminator: stride-2 convolutions (kernel 4, widths ``channels``), leaky ReLU 0.2, batch
    norm after all but the first, then a last convolution to one channel averaged to one logit. With
    ``spectral_norm`` every convolution is spectrally normalized and batch norm is left out (SNGAN). 2D or 3D,
    any image size; class-conditional models get one-hot class channels concatenated to the image.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: widths of the stride-2 stages. Default ``(64, 128, 256)`` (DCGAN's at 28-64 px).
        num_classes: for class-conditional models.
        spectral_norm: spectral normalization instead of batch norm. Default False.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, channels: tuple[int, ...] = (64, 128, 256),
                 num_classes: int | None = None, spectral_norm: bool = False) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.num_classes = num_classes
        widths = [in_channels + (num_classes or 0), *channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(sn(conv(a, b, kernel_size=4, stride=2, padding=1)))
            if i > 0 and not spectral_norm:
                layers.append(norm(b))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(sn(conv(widths[-1], 1, kernel_size=3, stride=1, padding=1)))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels.")
            onehot = F.one_hot(labels.long(), self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot.reshape(*onehot.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])], 1)
        return self.body(x).flatten(1).mean(1)


class GANTrainer(BaselineTrainer):
    """One discriminator step then one generator step per batch, ``z ~ N(0, I)``:

    - ``loss="bce"`` (DCGAN, non-saturating): ``L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)``, ``L_G = BCE(D(G(z)), 1)``;
    - ``loss="hinge"`` (SNGAN): ``L_D = relu(1 - D(x)) + relu(1 + D(G(z)))``, ``L_G = -D(G(z))``.

    The community's settings are :meth:`dcgan_optimizers` (Adam lr 2e-4, betas (0.5, 0.999)),
    :func:`dcgan_init` and no gradient clipping (``grad_clip_norm=None``).

    Args:
        generator: the generator (shared backbone).
        discriminator: a :class:`Discriminator`.
        g_optimizer, d_optimizer: their optimizers.
        loss: ``"bce"`` or ``"hinge"``. Default ``"bce"``.
        Others: see :class:`~monai_neurosql.baselines.common.BaselineTrainer`.
    """

    def __init__(self, device, max_epochs: int, train_data_loader: Iterable, generator: nn.Module,
                 discriminator: nn.Module, g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer,
                 loss: str = "bce", **kwargs) -> None:
        if loss not in GAN_LOSSES:
            raise ValueError(f"loss must be one of {GAN_LOSSES}, got {loss!r}.")
        self.loss = loss
        conditional = getattr(generator, "num_classes", None) is not None
        super().__init__(device, max_epochs, train_data_loader, conditional=conditional, **kwargs)
        self.generator = generator.to(self.state.device)
        self.discriminator = discriminator.to(self.state.device)
        self._lay_out(self.generator, self.discriminator)
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
        if engine.loss == "hinge":
            d_loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        else:
            d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        check_finite_loss(d_loss, engine, "discriminator loss")
        engine.d_optimizer.zero_grad(set_to_none=True)
        optimizer_step(engine, d_loss, engine.d_optimizer, engine.discriminator.parameters(), engine.grad_clip_norm,
                       engine.d_scaler, fire_events=False)
        with torch.autocast(engine.state.device.type, enabled=engine.use_amp):
            gen_logits = engine.discriminator(fake, labels).float()
        g_loss = -gen_logits.mean() if engine.loss == "hinge" else bce(gen_logits, torch.ones_like(gen_logits))
        check_finite_loss(g_loss, engine, "generator loss")
        engine.g_optimizer.zero_grad(set_to_none=True)
        optimizer_step(engine, g_loss, engine.g_optimizer, engine.generator.parameters(), engine.grad_clip_norm,
                       engine.g_scaler, fire_events=False)
        return {CommonKeys.IMAGE: images, CommonKeys.PRED: fake.detach(), CommonKeys.LOSS: g_loss.item(),
                "g_loss": g_loss.item(), "d_loss": d_loss.item()}

    @staticmethod
    def dcgan_optimizers(generator: nn.Module, discriminator: nn.Module, lr: float = 2e-4,
                         betas: tuple[float, float] = (0.5, 0.999)) -> tuple[torch.optim.Adam, torch.optim.Adam]:
        """DCGAN's optimizers: Adam with ``lr`` 2e-4 and ``betas`` (0.5, 0.999) for both players."""
        return (torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
                torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas))

    def sample(self, num: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` images from ``z ~ N(0, I)`` (seeded), on the CPU."""
        z = torch.randn(num, self.generator.latent_size, generator=torch.Generator().manual_seed(seed))
        return decode(self.generator, z, labels, device="cpu")

from __future__ import annotations

from .common import BaselineTrainer, prepare_images
from .ddpm import DDPMTrainer, matched_diffusion_unet
from .gan import Discriminator, GANTrainer
from .vae import VAE, MLPEncoder, VAETrainer

__all__ = [
    "BaselineTrainer",
    "DDPMTrainer",
    "Discriminator",
    "GANTrainer",
    "MLPEncoder",
    "VAE",
    "VAETrainer",
    "matched_diffusion_unet",
    "prepare_images",
]

from __future__ import annotations

from .common import BaselineTrainer, prepare_images
from .ddpm import DDPMTrainer, SeededDDPMScheduler, matched_diffusion_unet
from .gan import GAN_LOSSES, Discriminator, GANTrainer, dcgan_init
from .vae import VAE, MLPEncoder, VAETrainer

__all__ = [
    "GAN_LOSSES",
    "VAE",
    "BaselineTrainer",
    "DDPMTrainer",
    "Discriminator",
    "GANTrainer",
    "MLPEncoder",
    "SeededDDPMScheduler",
    "VAETrainer",
    "dcgan_init",
    "matched_diffusion_unet",
    "prepare_images",
]

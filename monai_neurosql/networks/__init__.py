from __future__ import annotations

from .conv_generator import ConvGenerator
from .film_unet_generator import FiLMUNetGenerator
from .latent_generator import (
    LatentGenerator,
    count_parameters,
    generator_args,
    generator_builder,
    generator_class,
    generator_path,
)
from .resnet_generator import ResNetGenerator

__all__ = [
    "ConvGenerator",
    "FiLMUNetGenerator",
    "LatentGenerator",
    "ResNetGenerator",
    "count_parameters",
    "generator_args",
    "generator_builder",
    "generator_class",
    "generator_path",
]

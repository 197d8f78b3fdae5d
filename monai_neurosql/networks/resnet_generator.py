"""Residual upsampling generator (the paper's ResNet backbone, appendices D and L)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import nn

from .latent_generator import LatentGenerator

__all__ = ["ResNetGenerator"]


class ResNetGenerator(LatentGenerator):
    """Linear projection, residual upsampling blocks, a 3x3 head and a sigmoid.

    Each block doubles the size (nearest-neighbour :class:`~monai.networks.blocks.UpSample`) and applies a
    MONAI :class:`~monai.networks.blocks.ResidualUnit` (two conv-norm-act subunits with a skip connection,
    projected by a 1x1 convolution when the width changes). The paper uses four blocks
    ``512 -> 256 -> 128 -> 64`` (appendix L) or a constant width of 512 (appendix D); pass those as
    ``channels``; the default is lighter.

    Args:
        spatial_dims, latent_size, out_channels, spatial_size: as in :class:`LatentGenerator` (any output size).
        channels: width of the projection followed by the width of each upsampling block.
        act: activation. Default ReLU.
        norm: normalization. Default batch norm.
        kwargs: ``num_classes``, ``class_embed_size``, ``out_act`` of :class:`LatentGenerator`.
    """

    def __init__(
        self,
        spatial_dims: int,
        latent_size: int,
        out_channels: int = 1,
        spatial_size: Sequence[int] | int = 64,
        channels: Sequence[int] = (128, 128, 64, 32),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, latent_size, out_channels, spatial_size, channels, **kwargs)
        self.build_projection()
        channels = self.channels
        blocks: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            blocks.append(UpSample(spatial_dims, c_in, scale_factor=2, mode="nontrainable", interp_mode="nearest",
                                   align_corners=None))
            blocks.append(ResidualUnit(spatial_dims, c_in, c_out, subunits=2, act=act, norm=norm))
        self.blocks = nn.Sequential(*blocks)
        self.head = Convolution(spatial_dims, channels[-1], out_channels, kernel_size=3, conv_only=True)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.project_to_base(h)))

"""DCGAN-like transposed-convolution generator (the paper's ConvNet baseline backbone, appendix D)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import ADN, Convolution
from torch import nn

from .latent_generator import LatentGenerator

__all__ = ["ConvGenerator"]


def _rename_project_adn(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load checkpoints written before ``project_adn`` was MONAI's ``ADN`` (keys ``.0``/``.1``, now ``.N``/``.A``)."""
    old = f"{prefix}project_adn.0."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}project_adn.N.{key[len(old):]}"] = state_dict.pop(key)


class ConvGenerator(LatentGenerator):
    """Linear projection, then stride-2 transposed convolutions with halving widths and batch norm, then sigmoid.

    ``z -> Linear -> C0 x base -> [ConvT(s=2) -> norm -> act] x (len(channels) - 1) -> conv 3 -> crop -> sigmoid``,
    with ``base = ceil(spatial_size / 2^(len(channels) - 1))``. The paper's default widths are
    ``512 -> 256 -> 128 -> ...``; ours default to ``(256, 128, 64, 32)`` to stay light on CPUs.

    Args:
        spatial_dims, latent_size, out_channels, spatial_size: as in :class:`LatentGenerator` (any output size).
        channels: feature widths from the projection to the last upsampling block; one doubling per step.
        kernel_size: transposed-convolution kernel size. Default 3.
        act: activation (name or ``(name, kwargs)``). Default ReLU.
        norm: normalization (name or ``(name, kwargs)``). Default batch norm.
        kwargs: ``num_classes``, ``class_embed_size``, ``out_act`` of :class:`LatentGenerator`.

    Example::

        net = ConvGenerator(spatial_dims=2, latent_size=16, spatial_size=28)
        images = net(torch.randn(8, 16))   # (8, 1, 28, 28) in [0, 1]
    """

    def __init__(
        self,
        spatial_dims: int,
        latent_size: int,
        out_channels: int = 1,
        spatial_size: Sequence[int] | int = 64,
        channels: Sequence[int] = (256, 128, 64, 32),
        kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, latent_size, out_channels, spatial_size, channels, **kwargs)
        self.build_projection()
        channels = self.channels
        self.project_adn = ADN("NA", channels[0], act=act, norm=norm, norm_dim=spatial_dims)
        self.register_load_state_dict_pre_hook(_rename_project_adn)
        self.up = nn.Sequential(*[
            Convolution(spatial_dims, c_in, c_out, strides=2, kernel_size=kernel_size, act=act, norm=norm,
                        is_transposed=True)
            for c_in, c_out in itertools.pairwise(channels)
        ])
        self.head = Convolution(spatial_dims, channels[-1], out_channels, kernel_size=3, conv_only=True)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.project_adn(self.project_to_base(h))))

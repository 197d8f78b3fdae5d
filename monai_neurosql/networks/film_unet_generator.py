"""U-Net on a learned constant, modulated by the latent code through FiLM at every level (appendix D)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from .latent_generator import LatentGenerator

__all__ = ["FiLMUNetGenerator"]


class _FiLMConvBlock(nn.Module):
    """``conv 3 -> norm -> FiLM (h * (1 + gamma) + beta) -> act``; ``gamma, beta`` are given per sample."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act, norm) -> None:
        super().__init__()
        self.conv = Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, conv_only=True)
        self.norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels)
        self.act = get_act_layer(act)
        self.out_channels = out_channels

    def forward(self, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        gamma, beta = film.reshape(film.shape[0], 2, self.out_channels, *([1] * (h.ndim - 2))).unbind(1)
        return self.act(self.norm(self.conv(h)) * (1 + gamma) + beta)


class FiLMUNetGenerator(LatentGenerator):
    """A U-Net whose input is a learnable constant tensor and whose only input-dependence is FiLM.

    The latent code (with the class embedding when conditional) goes through a small MLP that predicts a
    per-channel scale and shift (Feature-wise Linear Modulation) for every convolution block of the encoder,
    the bottleneck and the decoder, as in the paper's U-Net backbone (appendix D). The constant has the
    (padded) output size, so the U-Net's skip connections carry learned spatial structure that the latent
    code modulates at every resolution.

    Args:
        spatial_dims, latent_size, out_channels, spatial_size: as in :class:`LatentGenerator` (output size:
            any size; padded internally to a multiple of ``2^(len(channels) - 1)``).
        channels: widths per resolution level, the last is the bottleneck. Default ``(32, 64, 128)``.
        film_hidden: width of the MLP that predicts the FiLM parameters. Default 128.
        act: activation. Default leaky ReLU.
        norm: normalization before FiLM. Default instance norm without affine parameters (FiLM provides them).
        kwargs: ``num_classes``, ``class_embed_size``, ``out_act`` of :class:`LatentGenerator`.
    """

    #: The trainers and ``decode`` leave this network's weights as stored on the CPU: under channels-last its
    #: instance norms make training 0.91-0.93x as fast at 64 px, and decoding no faster
    #: (``benchmarks/bench_training_layout.py``, ``benchmarks/bench_decode_layout.py``).
    channels_last_faster = False

    def __init__(
        self,
        spatial_dims: int,
        latent_size: int,
        out_channels: int = 1,
        spatial_size: Sequence[int] | int = 64,
        channels: Sequence[int] = (32, 64, 128),
        film_hidden: int = 128,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple = ("instance", {"affine": False}),
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, latent_size, out_channels, spatial_size, channels, **kwargs)
        channels = self.channels
        levels = len(channels) - 1
        padded = tuple(self.base_size(self.spatial_size, levels)[i] * 2**levels for i in range(spatial_dims))
        self.constant = nn.Parameter(0.1 * torch.randn(1, channels[0], *padded))
        self.down = nn.ModuleList()
        prev = channels[0]
        for c in channels:  # encoder blocks and bottleneck
            self.down.append(_FiLMConvBlock(spatial_dims, prev, c, act, norm))
            prev = c
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=2)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for c_skip, c_in in zip(reversed(channels[:-1]), reversed(channels[1:])):
            self.upsample.append(UpSample(spatial_dims, c_in, scale_factor=2, mode="nontrainable",
                                          interp_mode="nearest", align_corners=None))
            self.up.append(_FiLMConvBlock(spatial_dims, c_in + c_skip, c_skip, act, norm))
        film_sizes = [2 * b.out_channels for b in [*self.down, *self.up]]
        self.film_split = film_sizes
        self.film = nn.Sequential(
            nn.Linear(self.input_size, film_hidden), get_act_layer(act), nn.Linear(film_hidden, sum(film_sizes))
        )
        # start close to a plain U-Net (small gamma, beta), so early training is stable
        nn.init.normal_(self.film[-1].weight, std=0.02)
        nn.init.zeros_(self.film[-1].bias)
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        films = list(torch.split(self.film(h), self.film_split, dim=1))
        x = self.constant.expand(h.shape[0], *self.constant.shape[1:])
        skips = []
        for i, block in enumerate(self.down):
            x = block(x, films.pop(0))
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for upsample, block in zip(self.upsample, self.up):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1), films.pop(0))
        return self.head(x)

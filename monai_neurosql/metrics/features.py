"""Feature extractors for distribution metrics: the paper's fixed random proxy network and pretrained networks."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

__all__ = ["ProxyFeatureNet", "extract_features", "hub_checkpoint_path", "load_pretrained_weights"]


class ProxyFeatureNet(nn.Module):
    """The fixed lightweight convnet of the paper's proxy-FID (appendix E): random weights from a fixed seed.

    ``conv3x3(C -> 32) -> [conv3x3 stride 2] x 3 (64, 128, 128) -> global average pooling -> 128-d``, leaky ReLU
    between layers, Kaiming-normal weights drawn from ``torch.Generator().manual_seed(seed)`` (the global RNG is
    untouched), inputs mapped from ``[0, 1]`` to ``[-1, 1]``. Global pooling makes it work at any image size, 2D
    or 3D. The features carry no learned semantics: distances computed on them are a coarse, reproducible
    indicator ("proxy"), not the Inception FID.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_features: feature size. Default 128.
        seed: weight seed. Default 0.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_features: int = 128, seed: int = 0) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        widths = [in_channels, 32, 64, 128, num_features]
        self.layers = nn.ModuleList(
            conv(c_in, c_out, kernel_size=3, stride=1 if i == 0 else 2, padding=1)
            for i, (c_in, c_out) in enumerate(itertools.pairwise(widths))
        )
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for layer in self.layers:
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                layer.bias.zero_()
        for p in self.parameters():
            p.requires_grad_(False)
        self.spatial_dims = spatial_dims
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = 2.0 * x - 1.0
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.2)
        return h.flatten(2).mean(2)


@torch.no_grad()
def extract_features(
    net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``net(images)`` in batches (no gradients), as a float64 CPU ``(N, F)`` tensor."""
    device = torch.device(device) if device is not None else next(
        (p.device for p in getattr(net, "parameters", lambda: iter(()))()), torch.device("cpu"))
    out = [net(images[i : i + batch_size].to(device).float()).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def hub_checkpoint_path(filename: str, subdir: str = "checkpoints") -> Path:
    """Where ``torch.hub`` keeps a downloaded checkpoint: ``<torch hub dir>/<subdir>/<filename>``."""
    return Path(torch.hub.get_dir()) / subdir / filename


def load_pretrained_weights(filename: str, weights_path: str | os.PathLike | None, what: str,
                            source: str = "torchvision's standard download of these weights",
                            hub_subdir: str = "checkpoints") -> dict:
    """State dict of pretrained weights from ``weights_path`` or the torch hub cache; never downloads.

    Args:
        filename: the checkpoint's file name in the hub cache.
        weights_path: an explicit file (tried first).
        what: the metric's name, for the message.
        source: where users get the file, for the message.
        hub_subdir: the cache folder under the torch hub dir. Default ``checkpoints``.

    Raises:
        FileNotFoundError: the weights are in neither place; the message says where to put them.
    """
    candidates = [Path(weights_path).expanduser()] if weights_path else []
    candidates.append(hub_checkpoint_path(filename, hub_subdir))
    for path in candidates:
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{what} needs the pretrained weights {filename!r}, which were found neither at "
        f"{', '.join(repr(str(c)) for c in candidates)}. Copy that file ({source}, fetched once on a machine with "
        "internet) to the torch hub folder named here, or pass its path. No metric is computed with random weights "
        "under this name; the domain metrics (an encoder trained on your own training images) and the paper's "
        "proxy-FID (fixed random features) need no download."
    )

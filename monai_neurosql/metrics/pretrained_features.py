"""Pretrained feature networks for Frechet distances, each loaded from a local file and never downloaded.

- :class:`FIDInceptionFeatures`: the standard FID network (pytorch-fid's port of the TensorFlow Inception,
  weights ``pt_inception-2015-12-05-6726825d.pth``): the only features whose Frechet distance we call "FID".
- :class:`ImageNetInceptionFeatures`: torchvision's ImageNet Inception-v3. Its Frechet distance is *not* FID
  (other weights, other numbers): it is reported as ``fd_imagenet_inception``.
- :class:`RadImageNetResNet50Features` (2D) and :class:`MedicalNetResNet10Features` (3D): the medical feature
  networks MONAI's generative tutorials use for their FID (loaded there from the torch hub repositories
  ``Warvito/radimagenet-models`` and ``warvito/MedicalNet-models``), reported as ``fd_radimagenet`` and
  ``fd_medicalnet``.

Without the file each constructor raises ``FileNotFoundError`` naming the file and where to put it.
"""

from __future__ import annotations

import os
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from ..extras import require
from .features import load_pretrained_weights

__all__ = [
    "FID_INCEPTION_WEIGHTS",
    "IMAGENET_INCEPTION_WEIGHTS",
    "MEDICALNET_WEIGHTS",
    "RADIMAGENET_WEIGHTS",
    "FIDInceptionFeatures",
    "ImageNetInceptionFeatures",
    "MedicalNetResNet10Features",
    "RadImageNetResNet50Features",
]

#: pytorch-fid's FID Inception weights (the TensorFlow FID network of Heusel et al., ported).
FID_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
#: torchvision's ImageNet Inception-v3 weights.
IMAGENET_INCEPTION_WEIGHTS = "inception_v3_google-0cc3c7bd.pth"
#: RadImageNet ResNet50 without its top, as cached by ``Warvito/radimagenet-models`` (hub ``checkpoints``).
RADIMAGENET_WEIGHTS = "RadImageNet-ResNet50_notop.pth"
#: MedicalNet ResNet-10 trained on 23 data sets, as cached by ``warvito/MedicalNet-models`` (hub ``medicalnet``).
MEDICALNET_WEIGHTS = "resnet_10_23dataset.pth"


def _rgb(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"this feature network takes 2D images (B, C, H, W), got shape {tuple(x.shape)}.")
    return x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()[:, :3]


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class FIDInceptionFeatures(nn.Module):
    """The FID network: pytorch-fid's ``InceptionV3`` (pool3, 2048-d) with the FID weights from a file.

    Inputs in ``[0, 1]``, grey images replicated to RGB; pytorch-fid resizes to 299 x 299 and maps to
    ``[-1, 1]`` itself. 2D only. Needs the ``pytorch-fid`` package.

    Args:
        weights_path: ``pt_inception-2015-12-05-6726825d.pth``; default the torch hub ``checkpoints`` folder.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        inception = require("pytorch_fid.inception", "fid", "FID", package="pytorch-fid")

        state = load_pretrained_weights(FID_INCEPTION_WEIGHTS, weights_path, "FID (FID Inception)",
                                        source="pytorch-fid's release file, the one its first run downloads")
        # pytorch-fid fetches the weights by URL inside its constructor: hand it the loaded file instead
        with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: state):
            self.net = _frozen(inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_rgb(x))[0].flatten(1)


class ImageNetInceptionFeatures(nn.Module):
    """Pool3 (2048-d) features of torchvision's ImageNet Inception-v3 (weights from a file). Not the FID network.

    Grey images replicated to RGB, resized to 299 x 299, ImageNet normalization. 2D only.

    Args:
        weights_path: ``inception_v3_google-0cc3c7bd.pth``; default the torch hub ``checkpoints`` folder.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        import torchvision

        state = load_pretrained_weights(IMAGENET_INCEPTION_WEIGHTS, weights_path, "fd_imagenet_inception")
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(state)
        net.fc = nn.Identity()
        self.net = _frozen(net)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(_rgb(x), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


class _KerasBottleneck(nn.Module):
    """ResNet50 bottleneck as RadImageNet's Keras original has it (biased convolutions, BN eps 1.001e-5)."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out = 4 * width
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride)
        self.bn1 = nn.BatchNorm2d(width, eps=1.001e-5)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width, eps=1.001e-5)
        self.conv3 = nn.Conv2d(width, out, 1)
        self.bn3 = nn.BatchNorm2d(out, eps=1.001e-5)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride),
                                            nn.BatchNorm2d(out, eps=1.001e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class RadImageNetResNet50Features(nn.Module):
    """RadImageNet ResNet50 features (2048-d, spatially averaged), as MONAI's 2D generative tutorials compute FID.

    Preprocessing as there: grey images replicated to 3 channels, RGB -> BGR, the Keras channel means
    ``(0.406, 0.456, 0.485)`` subtracted from ``[0, 1]`` inputs, no resizing. 2D only.

    Args:
        weights_path: ``RadImageNet-ResNet50_notop.pth``; default the torch hub ``checkpoints`` folder (where
            ``torch.hub.load("Warvito/radimagenet-models", "radimagenet_resnet50")`` caches it).
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        state = load_pretrained_weights(RADIMAGENET_WEIGHTS, weights_path, "fd_radimagenet",
                                        source="the file torch.hub.load('Warvito/radimagenet-models', "
                                               "'radimagenet_resnet50') caches")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        width, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [_KerasBottleneck(width, planes, stride)] + [_KerasBottleneck(4 * planes, planes, 1)
                                                                 for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            width = 4 * planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.load_state_dict(state)
        _frozen(self)
        self.register_buffer("mean", torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _rgb(x)[:, [2, 1, 0]] - self.mean
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))


class MedicalNetResNet10Features(nn.Module):
    """MedicalNet ResNet-10 (23 data sets) features (512-d, spatially averaged) of 3D volumes, as MONAI's 3D
    generative tutorials compute FID: each volume z-scored, then MONAI's ``resnet10`` with MedicalNet's layout
    (shortcut B, stride-2 stem, dilated stride-1 stages 3 and 4).

    Args:
        weights_path: ``resnet_10_23dataset.pth``; default the torch hub ``medicalnet`` folder (where
            ``torch.hub.load("warvito/MedicalNet-models", "medicalnet_resnet10_23datasets")`` caches it).
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        from monai.networks.nets import resnet10

        state = load_pretrained_weights(MEDICALNET_WEIGHTS, weights_path, "fd_medicalnet", hub_subdir="medicalnet",
                                        source="the file torch.hub.load('warvito/MedicalNet-models', "
                                               "'medicalnet_resnet10_23datasets') caches")
        state = state.get("state_dict", state)
        state = {k.replace("module.", ""): v for k, v in state.items()}
        net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B",
                       bias_downsample=False, conv1_t_size=7, conv1_t_stride=2)
        # MedicalNet keeps stages 3 and 4 at stride 1 and dilates them instead (the weights are the same shapes)
        for stage, dilation in ((net.layer3, 2), (net.layer4, 4)):
            for block in stage:
                for conv in (block.conv1, block.conv2):
                    conv.stride, conv.dilation, conv.padding = (1, 1, 1), (dilation,) * 3, (dilation,) * 3
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1, 1)
        missing, _ = net.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{MEDICALNET_WEIGHTS} lacks weights for {missing[:4]}...; pass the ResNet-10 (23 data "
                             "sets) MedicalNet file.")
        self.net = _frozen(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"MedicalNet features take single-channel 3D volumes (B, 1, D, H, W), got {tuple(x.shape)}.")
        flat = x.float().flatten(1)
        x = (x - flat.mean(1).view(-1, 1, 1, 1, 1)) / flat.std(1).clamp_min(1e-8).view(-1, 1, 1, 1, 1)
        n = self.net
        h = n.maxpool(n.act(n.bn1(n.conv1(x))))
        h = n.layer4(n.layer3(n.layer2(n.layer1(h))))
        return h.mean((2, 3, 4))

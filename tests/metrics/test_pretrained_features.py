"""Pretrained feature networks: a clear error without their weights file, and the loading path with one.

Random weights stand in for the real files here: these tests check the plumbing only, and nothing computed here
is reported under a metric's name.
"""

from __future__ import annotations

import pytest
import torch

from monai_neurosql.metrics import (
    FIDInceptionFeatures,
    ImageNetInceptionFeatures,
    MedicalNetResNet10Features,
    RadImageNetResNet50Features,
    pretrained_features,
)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("cls, filename", [
    (FIDInceptionFeatures, "pt_inception-2015-12-05-6726825d.pth"),
    (ImageNetInceptionFeatures, "inception_v3_google-0cc3c7bd.pth"),
    (RadImageNetResNet50Features, "RadImageNet-ResNet50_notop.pth"),
    (MedicalNetResNet10Features, "resnet_10_23dataset.pth"),
])
def test_missing_weights_name_the_file_and_where_to_put_it(hub, tmp_path, cls, filename):
    if cls is FIDInceptionFeatures:
        pytest.importorskip("pytorch_fid")
    with pytest.raises(FileNotFoundError, match=f"{filename}.*No metric is computed with random weights"):
        cls(weights_path=tmp_path / "missing.pth")


def _random_state(cls, monkeypatch) -> dict:
    """The state dict of ``cls`` with its initial (random) weights, built without any weights file."""
    with monkeypatch.context() as m:
        m.setattr(pretrained_features, "load_pretrained_weights", lambda *a, **k: {})
        m.setattr(torch.nn.Module, "load_state_dict", lambda self, state, strict=True: ([], []))
        return cls().state_dict()


def test_radimagenet_and_medicalnet_load_a_weights_file(hub, tmp_path, monkeypatch):
    rad_state = _random_state(RadImageNetResNet50Features, monkeypatch)
    rad_state = {k: v for k, v in rad_state.items() if k != "mean"}  # the preprocessing buffer is not a weight
    torch.save(rad_state, tmp_path / "rad.pth")
    rad = RadImageNetResNet50Features(tmp_path / "rad.pth")
    assert rad(torch.rand(2, 1, 32, 32)).shape == (2, 2048)
    state = _random_state(MedicalNetResNet10Features, monkeypatch)
    # MedicalNet's files hold a DataParallel state dict under "state_dict"
    (hub / "medicalnet").mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k[4:]}": v for k, v in state.items()}},
               hub / "medicalnet" / "resnet_10_23dataset.pth")
    net = MedicalNetResNet10Features()  # found in the hub cache
    features = net(torch.rand(2, 1, 16, 16, 16))
    assert features.shape == (2, 512)
    assert net.net.layer4[0].conv1.dilation == (4, 4, 4) and net.net.layer3[0].conv1.stride == (1, 1, 1)
    with pytest.raises(ValueError, match="single-channel 3D"):
        net(torch.rand(2, 1, 16, 16))

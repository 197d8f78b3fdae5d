from __future__ import annotations

import pytest
import torch

from monai_neurosql.metrics import (
    LPIPSMetric,
    ProxyFeatureNet,
    classification_scores,
    extract_features,
    ms_ssim_diversity,
    ms_ssim_settings,
    paired_ssim,
    precision_recall,
    proxy_fid,
    reconstruction_ssim,
)
from monai_neurosql.networks import ConvGenerator
from tests.helpers import shapes


@pytest.fixture(scope="module")
def data():
    images, labels = shapes(160, size=16, seed=0)
    return images, labels


def test_proxy_features_are_fixed_and_seeded(data):
    images, _ = data
    a, b = ProxyFeatureNet(seed=0), ProxyFeatureNet(seed=0)
    torch.manual_seed(123)  # the global RNG does not matter
    fa = extract_features(a, images[:8])
    assert fa.shape == (8, 128)
    torch.testing.assert_close(fa, extract_features(b, images[:8]))
    assert not torch.allclose(fa, extract_features(ProxyFeatureNet(seed=1), images[:8]))
    assert extract_features(ProxyFeatureNet(spatial_dims=3), torch.rand(2, 1, 8, 8, 8)).shape == (2, 128)


def test_proxy_fid_known_answers(data):
    images, _ = data
    real, other = images[:80], images[80:]
    assert proxy_fid(real, real, num_samples=None) < 1e-6
    same_distribution = proxy_fid(real, other, num_samples=None)
    shifted = proxy_fid(real, (other * 0.3).clamp(0, 1), num_samples=None)
    noise = proxy_fid(real, torch.rand_like(other), num_samples=None)
    assert same_distribution < shifted and same_distribution < noise
    assert proxy_fid(real, other, num_samples=40, seed=1) == proxy_fid(real, other, num_samples=40, seed=1)


def test_ssim_metrics(data):
    images, _ = data
    assert paired_ssim(images, images, num_pairs=50) < 0.99  # random pairs, not identical pairs
    identical = images[:1].expand(20, -1, -1, -1)
    assert paired_ssim(identical, identical) == pytest.approx(1.0, abs=1e-5)
    assert paired_ssim(images, images) > paired_ssim(images, torch.rand_like(images))
    assert ms_ssim_diversity(identical) == pytest.approx(1.0, abs=1e-5)  # collapsed: no diversity
    assert ms_ssim_diversity(images) < 0.9
    assert ms_ssim_settings((28, 28))["kernel_size"] == 3 and len(ms_ssim_settings((28, 28))["weights"]) == 3
    assert abs(sum(ms_ssim_settings((128, 128))["weights"]) - 1) < 1e-9
    generator = ConvGenerator(2, 2, spatial_size=16, channels=(8, 8))
    codes = torch.randn(4, 2)
    from monai_neurosql import decode

    assert reconstruction_ssim(generator, codes, decode(generator, codes)) == pytest.approx(1.0, abs=1e-5)


def test_precision_recall_exposes_mode_collapse(data):
    images, _ = data
    net = ProxyFeatureNet()
    real = extract_features(net, images[:80])
    diverse = extract_features(net, images[80:])
    collapsed = extract_features(net, images[80:81].expand(80, -1, -1, -1) + 0.001 * torch.rand(80, 1, 16, 16))
    good, bad = precision_recall(real, diverse), precision_recall(real, collapsed)
    assert good["recall"] > 0.5 and bad["recall"] < 0.2
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(real[:3], diverse)


def test_classification_scores():
    scores = classification_scores(torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 1, 2, 2, 2, 1]), 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_precision"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert scores["macro_recall"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)


def test_lpips_loads_local_weights(tmp_path, monkeypatch):
    """The loading path works with weight files in the hub cache (random weights stand in for ImageNet ones
    here: this checks the plumbing only, and nothing computed here is reported as LPIPS)."""
    torchvision = pytest.importorskip("torchvision")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth.*No metric is computed with random weights"):
        LPIPSMetric()
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), checkpoints / "vgg16-397923af.pth")
    metric = LPIPSMetric()
    x = torch.rand(2, 1, 32, 32)
    assert metric(x, x).abs().max() < 1e-6 and metric(x, torch.rand_like(x)).min() > 0

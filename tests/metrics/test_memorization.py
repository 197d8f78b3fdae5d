from __future__ import annotations

import pytest
import torch

from monai_neurosql.metrics import MemorizationAudit, blur, memorization_audit


@pytest.fixture(scope="module")
def smooth():
    """Smooth random 16 x 16 images: unlike the toy shapes, no two are near-duplicates of each other."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(600, 1, 4, 4, generator=g)
    images = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    return {"train": images[:200], "heldout": images[200:500], "fresh": images[500:600]}


def test_copies_and_a_blurred_copy_are_flagged_new_and_featureless_images_are_not(smooth, tmp_path):
    train, heldout, fresh = smooth["train"], smooth["heldout"], smooth["fresh"]
    audit = MemorizationAudit(train, heldout, quantile=0.05)
    honest = audit(fresh)
    copies = audit(train[:20] + 0.002, png_path=tmp_path / "worst.png")
    assert copies["near_copy_share"] == 1.0 and honest["near_copy_share"] < 0.25
    assert copies["png"].is_file() and copies["nn_index"].tolist() == list(range(20))
    # blurred reproductions of a training image, hidden among new images, are flagged (in the low-pass spaces),
    # from a light blur to the heavy blur of the benchmark's blurred control (1/8 of the image size)
    for sigma in (0.7, 1.5, 2.0, 2.5):
        result = audit(torch.cat([fresh[:10], blur(train[7:8], sigma)]))
        assert bool(result["flagged"][-1]) and result["score"][-1] == result["score"].min(), sigma
    assert result["spaces"] == ("pixel", "lowpass_fine", "lowpass_coarse")
    # the mean training image is close to many training images at once, so it is not a copy of any of them
    mean = train.mean(0, keepdim=True).expand(10, -1, -1, -1)
    assert audit(mean)["near_copy_share"] == 0.0


def test_memorization_audit_needs_enough_heldout_images(smooth):
    with pytest.raises(ValueError, match="at least 300 held-out images"):
        memorization_audit(smooth["fresh"], smooth["train"], smooth["heldout"][:50])
    with pytest.raises(ValueError, match="quantile"):
        memorization_audit(smooth["fresh"], smooth["train"], smooth["heldout"], quantile=1.5)
    result = memorization_audit(smooth["fresh"][:5], smooth["train"], smooth["heldout"][:50], min_heldout=50,
                                feature_net=lambda x: x.flatten(1)[:, ::8])
    assert result["spaces"] == ("pixel", "lowpass_fine", "lowpass_coarse", "domain")


def test_the_heldout_calibration_is_cached_by_what_it_depends_on(smooth, tmp_path, monkeypatch, caplog):
    train, heldout, fresh = smooth["train"], smooth["heldout"], smooth["fresh"]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 8))
    first = MemorizationAudit(train, heldout, feature_net=net, cache_dir=tmp_path, min_heldout=50)
    assert len(list(tmp_path.glob("audit_*.pt"))) == 1
    calibrations = []
    original = MemorizationAudit._distances

    def counted(self, images, blur_queries=False):
        if blur_queries:  # the held-out calibration (a call's own distances are not)
            calibrations.append(len(images))
        return original(self, images, blur_queries)

    monkeypatch.setattr(MemorizationAudit, "_distances", counted)
    again = MemorizationAudit(train, heldout, feature_net=net, cache_dir=tmp_path, min_heldout=50)
    assert calibrations == [] and again.thresholds == first.thresholds  # reused, not computed
    assert torch.equal(again(fresh)["score"], first(fresh)["score"])
    # other training images, other weights of the feature network, another quantile: calibrated anew
    MemorizationAudit(train[1:], heldout, feature_net=net, cache_dir=tmp_path, min_heldout=50)
    torch.nn.init.zeros_(net[1].bias)
    MemorizationAudit(train, heldout, feature_net=net, cache_dir=tmp_path, min_heldout=50)
    MemorizationAudit(train, heldout, quantile=0.1, feature_net=net, cache_dir=tmp_path,
                      min_heldout=50)
    assert calibrations == [300, 300, 300] and len(list(tmp_path.glob("audit_*.pt"))) == 4
    # a damaged file is calibrated again, with a warning
    for path in tmp_path.glob("audit_*.pt"):
        path.write_bytes(b"cut")
    MemorizationAudit(train, heldout, quantile=0.1, feature_net=net, cache_dir=tmp_path,
                      min_heldout=50)
    assert len(calibrations) == 4 and "cannot be used" in caplog.text
    with pytest.raises(TypeError, match="torch module"):
        MemorizationAudit(train, heldout, feature_net=lambda x: x.flatten(1), cache_dir=tmp_path,
                          min_heldout=50)

from __future__ import annotations

import math

import pytest
import torch

from monai_neurosql.metrics import (
    MIN_SAMPLES,
    SampleScorer,
    below_minimum,
    control_flags,
    control_sets,
    density_coverage,
    kernel_distance,
    kid_difference,
    load_domain_encoder,
    minimum_samples,
    phase_scramble,
    save_domain_encoder,
    train_domain_encoder,
)
from tests.helpers import shapes


@pytest.fixture(scope="module")
def images():
    """Discs and squares, 16 x 16: 200 training, 120 unseen, 120 reference and 400 more held-out images."""
    x, y = shapes(840, size=16, seed=0)
    return {"train": x[:200], "train_labels": y[:200], "unseen": x[200:320], "reference": x[320:440],
            "heldout": x[440:]}


@pytest.fixture(scope="module")
def encoder(images):
    return train_domain_encoder(images["train"], images["train_labels"], kind="classifier", feature_size=16,
                                channels=(8, 16), epochs=4, batch_size=32, seed=0)


def test_kid_is_zero_for_one_distribution_and_large_for_another():
    g = torch.Generator().manual_seed(0)
    real, other = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    shifted = torch.randn(300, 8, generator=g) + 1.0
    same, self_kid, far = kernel_distance(real, other), kernel_distance(real, real), kernel_distance(real, shifted)
    assert abs(self_kid["kid"]) < 0.01 * far["kid"] and abs(same["kid"]) < 3 * same["kid_se"]
    assert far["kid"] > 10 * far["kid_se"] > 0
    with pytest.raises(ValueError, match="at least 3"):
        kernel_distance(real[:2], other)


def test_kid_standard_error_matches_the_spread_over_draws():
    """The jackknife SE of one draw predicts how much KID varies between independent draws (within 2x)."""
    g = torch.Generator().manual_seed(1)
    values, errors = [], []
    for _ in range(40):
        result = kernel_distance(torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g) + 0.3)
        values.append(result["kid"])
        errors.append(result["kid_se"])
    spread, mean_se = torch.tensor(values).std().item(), sum(errors) / len(errors)
    assert 0.5 < mean_se / spread < 2.0


def test_density_coverage_sees_missing_modes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g)
    matched = density_coverage(real, torch.randn(400, 4, generator=g))
    collapsed = density_coverage(real, torch.randn(400, 4, generator=g) * 0.05)
    assert matched["coverage"] > 0.85 and 0.7 < matched["density"] < 1.3
    assert collapsed["coverage"] < 0.2


def test_domain_encoder_kinds_train_save_and_load(images, encoder, tmp_path):
    assert encoder.info["kind"] == "classifier" and encoder.feature_size == 16
    features = encoder(images["train"])
    torch.testing.assert_close(features.mean(0), torch.zeros(16), atol=1e-4, rtol=0)  # standardized on training
    path = save_domain_encoder(encoder, tmp_path / "enc.pt")
    # trained channels-last, returned as stored: the encoder in memory and its file give the same features
    assert all(p.is_contiguous() for p in encoder.parameters())
    assert torch.equal(load_domain_encoder(path)(images["reference"][:8]), encoder(images["reference"][:8]))
    plain = train_domain_encoder(images["train"], images["train_labels"], kind="classifier", feature_size=16,
                                 channels=(8, 16), epochs=4, batch_size=32, seed=0, channels_last=False)
    assert plain.info["final_loss"] == pytest.approx(encoder.info["final_loss"], rel=1e-3)  # the same training
    for kind in ("autoencoder", "contrastive"):
        other = train_domain_encoder(images["train"][:64], kind=kind, feature_size=8, channels=(8,), epochs=1,
                                     batch_size=32)
        assert other.info["kind"] == kind and other(images["train"][:4]).shape == (4, 8)
    assert train_domain_encoder(images["train"][:64], images["train_labels"][:64], kind="auto", feature_size=8,
                                channels=(8,), epochs=1).info["kind"] == "contrastive"  # the measured best
    with pytest.raises(ValueError, match="needs labels"):
        train_domain_encoder(images["train"][:8], kind="classifier")
    with pytest.raises(FileNotFoundError, match="no domain encoder"):
        load_domain_encoder(tmp_path / "missing.pt")


def test_domain_encoder_with_an_input_size_sees_the_images_at_that_scale(images, tmp_path):
    import torch.nn.functional as F

    small = train_domain_encoder(images["train"], images["train_labels"], kind="autoencoder", feature_size=8,
                                 channels=(8, 8), epochs=1, batch_size=32, seed=0, input_size=8)
    assert small.config["input_size"] == 8 and small.info["input_size"] == 8
    x = images["reference"][:6]
    # the 16 px images are area-averaged to 8 px first: the same features as the 8 px images themselves
    torch.testing.assert_close(small(x), small(F.avg_pool2d(x, 2)))
    detail = x + 0.2 * (torch.arange(16).remainder(2).float() - 0.5)  # a 1 px stripe pattern, averaged away
    torch.testing.assert_close(small(detail), small(x), atol=1e-4, rtol=1e-4)
    loaded = load_domain_encoder(save_domain_encoder(small, tmp_path / "small.pt"))
    assert loaded.input_size == 8 and torch.equal(loaded(x), small(x))
    with pytest.raises(ValueError, match="input_size 4 is smaller"):
        train_domain_encoder(images["train"], kind="autoencoder", channels=(8, 8, 8), input_size=4)


def test_auto_encoder_settings_follow_the_image_size():
    from monai_neurosql.metrics import (
        AUTO_CANDIDATES,
        AUTO_INPUT_SIZE,
        AUTO_MEMBERS,
        DomainEncoderEnsemble,
        auto_encoder_settings,
    )

    large = {"kind": "autoencoder", "input_size": AUTO_INPUT_SIZE, "members": AUTO_MEMBERS,  # at 64 and 128 px
             "candidates": AUTO_CANDIDATES}
    small = {"kind": "contrastive", "input_size": None, "members": 1, "candidates": 1}  # chosen at 28 px; 3D not studied
    assert auto_encoder_settings((8, 1, 64, 64)) == large and auto_encoder_settings((128, 128)) == large
    assert auto_encoder_settings((8, 1, 28, 28)) == small and auto_encoder_settings((32, 32)) == small
    assert auto_encoder_settings((2, 1, 64, 64, 64)) == small and auto_encoder_settings((64, 64, 64)) == small
    big = torch.rand(8, 1, 40, 40)
    auto = train_domain_encoder(big, kind="auto", feature_size=8, channels=(8,), epochs=1, batch_size=8)
    assert auto.info["kind"] == "autoencoder" and auto.input_size == AUTO_INPUT_SIZE
    assert not isinstance(auto, DomainEncoderEnsemble) and auto.info["members"] == AUTO_MEMBERS == 1
    assert auto.info["candidates"] == 1  # no validation images: one seed, not the best of AUTO_CANDIDATES
    kept = train_domain_encoder(big, kind="auto", feature_size=8, channels=(8,), epochs=1, batch_size=8,
                                input_size=20, members=1)
    assert kept.input_size == 20 and not hasattr(kept, "members")  # explicit settings win


def test_a_reused_encoder_that_is_not_the_auto_space_is_named_with_what_to_do():
    from monai_neurosql.metrics import DomainEncoder, DomainEncoderEnsemble, auto_mismatch

    old = DomainEncoder(2, 1, feature_size=4, channels=(4,))
    old.info = {"kind": "contrastive"}  # written before the choice changed above 32 px
    message = auto_mismatch(old, (8, 1, 64, 64), where="eval/domain_encoder.pt")
    assert message.startswith("eval/domain_encoder.pt is a contrastive encoder at full size")
    assert "an autoencoder encoder on the images resized to 32 px" in message and "delete it" in message
    assert auto_mismatch(old, (8, 1, 28, 28)) is None  # still the choice at 28 px
    new = DomainEncoder(2, 1, feature_size=4, channels=(4,), input_size=32)
    new.info = {"kind": "autoencoder"}
    assert auto_mismatch(new, (8, 1, 128, 128)) is None
    three = DomainEncoderEnsemble([DomainEncoder(2, 1, feature_size=4, channels=(4,), input_size=32) for _ in range(3)])
    three.info = {"kind": "autoencoder"}  # an ensemble (the study's --members 3) is another space, named so
    assert "is 3 autoencoder encoders on the images resized to 32 px, not" in auto_mismatch(three, (8, 1, 64, 64))


def test_an_ensemble_of_encoders_is_one_space_of_one_members_size_and_loads_as_saved(images, tmp_path):
    """Three encoders (consecutive seeds) as one space: their features concatenated and projected on the
    principal directions of the training images' features, at one member's feature size; saved and loaded whole."""
    from monai_neurosql.metrics import DomainEncoder, DomainEncoderEnsemble

    train = images["train"]
    space = train_domain_encoder(train, kind="autoencoder", feature_size=6, channels=(8, 8), epochs=1, members=3,
                                 seed=4)
    assert isinstance(space, DomainEncoderEnsemble) and space.info["members"] == 3 and space.info["seed"] == 4
    alone = train_domain_encoder(train, kind="autoencoder", feature_size=6, channels=(8, 8), epochs=1, seed=5)
    torch.testing.assert_close(space.members[1](train[:4]), alone(train[:4]))  # member i: seed + i
    features = space(train)
    assert features.shape == (len(train), 6)
    # on the training images: centred, mean variance 1 per feature, uncorrelated (principal directions)
    torch.testing.assert_close(features.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    assert features.var(0).mean().item() == pytest.approx(1.0, rel=1e-3)
    cov = torch.cov(features.T)
    assert (cov - torch.diag(cov.diag())).abs().max() < 1e-3
    loaded = load_domain_encoder(save_domain_encoder(space, tmp_path / "space.pt"))
    assert isinstance(loaded, DomainEncoderEnsemble) and loaded.info == space.info
    torch.testing.assert_close(loaded(train[:8]), space(train[:8]))
    with pytest.raises(ValueError, match="same images"):
        DomainEncoderEnsemble([DomainEncoder(2, 1, 4, (4,)), DomainEncoder(2, 1, 4, (4,), input_size=16)])
    with pytest.raises(ValueError, match="2 or more"):
        DomainEncoderEnsemble([DomainEncoder(2, 1, 4, (4,))])


def test_controls_are_ordered_by_the_domain_metrics(images, encoder):
    """Unseen real images score better than Gaussian noise, the mean image and blurred images in domain-FID and
    KID, and copies of training images are what the memorization audit flags."""
    sets = control_sets(images["train"], images["unseen"], 120, seed=0, blur_sigma=2.0)
    assert set(sets) == {"real_unseen", "real_train", "noise", "mean_image", "blurred", "phase_scrambled"}
    assert all(len(v) == 120 for v in sets.values())
    scorer = SampleScorer(images["reference"], encoder=encoder, train=images["train"],
                          audit_heldout=images["heldout"], proxy=False)
    scores = {name: scorer(x) for name, x in sets.items()}
    floor = scores["real_unseen"]
    # (flat discs and squares have no structure inside their outline for the phase-scrambled control to destroy:
    # it is ordered on toy brains below)
    for control in ("noise", "mean_image", "blurred"):
        assert scores[control]["kid"] > floor["kid"] + 3 * scores[control]["kid_se"], control
        assert scores[control]["coverage"] < floor["coverage"], control
    assert floor["near_copy_share"] <= 0.2 and scores["real_train"]["near_copy_share"] > 0.9
    assert scores["blurred"]["near_copy_share"] > 0.5  # blurred copies of training images
    # KID of the reference set with itself is ~0
    assert abs(scorer(images["reference"])["kid"]) < 0.05 * scores["noise"]["kid"]


def toy_brains(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Heads with structure inside the outline: a disc, a bright rim and two dark "ventricles" of random width."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = (size / 2 + torch.randn(2, generator=g)).tolist()
        r = size * (0.38 + 0.04 * float(torch.rand((), generator=g)))
        distance = (yy - cy) ** 2 + (xx - cx) ** 2
        img = (distance <= r**2).float() * (0.6 + 0.2 * float(torch.rand((), generator=g)))
        w = 1.5 + 2.5 * float(torch.rand((), generator=g))
        for side in (-1, 1):
            ventricle = (yy - cy) ** 2 / (3 * w) ** 2 + (xx - cx - 3 * side) ** 2 / w**2 <= 1
            img = torch.where(ventricle, torch.full_like(img, 0.1), img)
        img = torch.where((distance <= r**2) & (distance >= (r - 2) ** 2), torch.ones_like(img), img)
        out.append(img[None])
    return torch.stack(out)


def test_phase_scramble_keeps_the_spectrum_and_layout_and_scrambles_the_structure():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 1, 8, 8, generator=g), size=(32, 32), mode="bilinear")
    fine = torch.rand(6, 1, 32, 32, generator=g)
    x = 0.5 + 0.15 * (smooth - 0.5) + 0.1 * (fine - 0.5)  # all foreground, no clamping
    y = phase_scramble(x, cutoff=4, generator=torch.Generator().manual_seed(1))
    spectrum_x, spectrum_y = torch.fft.rfft2(x), torch.fft.rfft2(y)
    torch.testing.assert_close(spectrum_y.abs(), spectrum_x.abs(), atol=1e-3, rtol=1e-4)  # the power spectrum
    torch.testing.assert_close(spectrum_y[..., :3, :3], spectrum_x[..., :3, :3], atol=1e-3, rtol=1e-4)  # layout
    high = torch.fft.fftfreq(32)[:, None].abs() * 32 + torch.fft.rfftfreq(32)[None] * 32 > 8  # well above the cutoff
    agreement = (spectrum_x[..., high] * spectrum_y[..., high].conj()).real.sum() / (
        spectrum_x[..., high].abs().square().sum())
    assert abs(float(agreement)) < 0.1  # the fine structure is new (1 for the image itself)
    assert torch.equal(y, phase_scramble(x, cutoff=4, generator=torch.Generator().manual_seed(1)))
    # the background stays as it was, the foreground in [0, 1]; 3D images too
    disc = x.clone()
    disc[..., :, :8] = 0.0
    z = phase_scramble(disc, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z[..., :, :8], disc[..., :, :8]) and 0.0 <= float(z.min()) and float(z.max()) <= 1.0
    assert phase_scramble(torch.rand(2, 1, 12, 14, 10)).shape == (2, 1, 12, 14, 10)


def test_phase_scrambled_toy_brains_rank_below_real_ones():
    """With structure inside the outline, a space that sees it (an autoencoder's) ranks the phase-scrambled control
    well below the unseen-real floor."""
    x = toy_brains(440)
    sets = control_sets(x[:200], x[200:320], 120, seed=0)
    encoder = train_domain_encoder(x[:200], kind="autoencoder", feature_size=16, channels=(8, 16), epochs=3,
                                   batch_size=32, seed=0)
    scorer = SampleScorer(x[320:440], encoder=encoder, proxy=False)
    floor, scrambled = scorer(sets["real_unseen"]), scorer(sets["phase_scrambled"])
    assert scrambled["kid"] > floor["kid"] + 3 * scrambled["kid_se"] + 3 * floor["kid_se"]


def _texture_net(x: torch.Tensor) -> torch.Tensor:
    """Features of fine texture only: statistics of the local Laplacian's energy (a texture-biased space)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    lap = torch.nn.functional.conv2d(x, kernel, padding=1).abs()
    pooled = torch.nn.functional.avg_pool2d(lap, 4).flatten(1)
    return 10.0 * torch.stack([lap.mean((1, 2, 3)), lap.square().mean((1, 2, 3)), pooled.std(1),
                               pooled.amax(1)], 1)


def test_structure_margin_is_negative_in_a_texture_space_and_is_the_paired_kid_z():
    """A space of texture statistics ranks phase-scrambled images (texture kept) before mildly blurred ones
    (texture gone): a clearly negative margin; the value is the paired KID z of those two control sets."""
    from monai_neurosql.metrics import MILD_BLUR_FRACTION, blur, extract_features, structure_margin

    x = toy_brains(300)
    train, reference = x[:200], x[200:]
    margin = structure_margin(_texture_net, train, reference, seed=3)
    assert margin < -5.0
    sets = control_sets(train, reference, 100, seed=3)
    mild = blur(sets["real_train"], 32 * MILD_BLUR_FRACTION)
    d = kid_difference(extract_features(_texture_net, reference), extract_features(_texture_net, sets["phase_scrambled"]),
                       extract_features(_texture_net, mild))
    assert margin == pytest.approx(d["difference"] / d["se"])
    assert structure_margin(_texture_net, train, reference, num=40, seed=3) != pytest.approx(margin)  # fewer images
    with pytest.raises(ValueError, match="at least 3 images"):
        structure_margin(_texture_net, train, reference[:2])


def test_auto_keeps_the_encoder_seed_that_ranks_anatomy_before_texture_on_the_validation_split():
    from monai_neurosql.metrics import AUTO_CANDIDATES, structure_margin

    x = toy_brains(90, size=40)
    train, validation = x[:60], x[60:]
    settings = {"feature_size": 8, "channels": (8,), "epochs": 1, "batch_size": 16, "seed": 3}
    chosen = train_domain_encoder(train, kind="auto", validation=validation, **settings)
    info = chosen.info
    assert info["candidates"] == AUTO_CANDIDATES == 3 and len(info["candidate_structure_z"]) == 3
    assert info["structure_z"] == max(info["candidate_structure_z"])
    kept = info["candidate_structure_z"].index(info["structure_z"])
    assert info["seed"] == 3 + kept and kept > 0  # here not the first seed
    alone = train_domain_encoder(train, kind="autoencoder", input_size=32, **{**settings, "seed": 3 + kept})
    torch.testing.assert_close(chosen(validation), alone(validation))  # the kept seed's encoder itself
    assert info["structure_z"] == pytest.approx(structure_margin(alone, train, validation, seed=3))
    # without validation images one encoder (the first seed) is trained; explicit counts are checked
    assert train_domain_encoder(train, kind="auto", **settings).info["candidates"] == 1
    with pytest.raises(ValueError, match="pass validation="):
        train_domain_encoder(train, kind="autoencoder", candidates=2, **settings)
    # too few validation images for the structure test: auto trains one seed; asked for, refused before training
    assert train_domain_encoder(train, kind="auto", validation=validation[:2], **settings).info["candidates"] == 1
    with pytest.raises(ValueError, match="at least 3 real images.*2 validation images"):
        train_domain_encoder(train, kind="autoencoder", candidates=2, validation=validation[:2], **settings)
    with pytest.raises(ValueError, match="members=1"):
        train_domain_encoder(train, kind="autoencoder", candidates=2, members=2, validation=validation, **settings)


def test_cross_check_spaces_score_kid_in_each_space(images, encoder):
    def pixels(x):
        return x.flatten(1)

    scorer = SampleScorer(images["reference"], encoder=encoder, proxy=False, cross_encoders={"pixels": pixels})
    fake = images["unseen"][:100].flip(-1).roll(3, -2)
    scores = scorer(fake)
    expected = kernel_distance(pixels(images["reference"][:100]), pixels(fake))
    assert scores["kid_pixels"] == pytest.approx(expected["kid"]) and scores["kid_pixels_se"] == pytest.approx(
        expected["kid_se"])
    assert scores["kid"] != scores["kid_pixels"]  # the domain space is another space
    assert SampleScorer(images["reference"][:40], cross_encoders={"pixels": pixels}, proxy=False)(
        fake[:40])["kid_pixels"] == "n<min (40<50)"


def test_metrics_below_their_minimum_count_say_so(images, encoder):
    scorer = SampleScorer(images["reference"][:40], encoder=encoder, train=images["train"])
    scores = scorer(images["unseen"][:40])
    assert scores["num_scored"] == 40
    assert scores["domain_fid"] == f"n<min (40<{4 * 16})" and scores["kid"] == "n<min (40<50)"
    assert scores["precision"] == "n<min (40<100)" and scores["coverage"] == "n<min (40<100)"
    assert scores["proxy_fid"] == "n<min (40<512)" and scores["near_copy_share"] == "n<min (40<400)"
    assert below_minimum(0.5, 50, 50) == 0.5 and math.isnan(below_minimum(None, 60, 50))
    assert minimum_samples("domain_fid", 64) == 256 and minimum_samples("fid") == MIN_SAMPLES["fid"] == 2048
    with pytest.raises(ValueError, match="feature_size"):
        minimum_samples("domain_fid")


def test_control_flags_name_every_order_violation():
    metrics = {"kid": ("distribution", False), "recall": ("distribution", True),
               "near_copy_share": ("memorization", False)}
    good = {"real_unseen": {"kid": 0.0, "recall": 0.9, "near_copy_share": 0.05},
            "real_train": {"kid": 0.0, "recall": 0.9, "near_copy_share": 1.0},
            "noise": {"kid": 2.0, "recall": 0.0, "near_copy_share": 0.0},
            "mean_image": {"kid": 3.0, "recall": "0.0", "near_copy_share": 0.0},
            "blurred": {"kid": 1.0, "recall": 0.1, "near_copy_share": 0.8},
            "gan": {"kid": 0.5, "recall": 0.5, "near_copy_share": 0.1}}
    assert control_flags(good, metrics, ["gan"]) == []
    bad = {**good, "noise": {"kid": 0.4, "recall": "n<min (40<100)", "near_copy_share": 0.0}}
    lines = control_flags(bad, metrics, ["gan"])
    assert lines == ["kid: noise (0.4) ranks at or better than gan (0.5)"]
    blind = {**good, "gan": {**good["gan"], "near_copy_share": 0.9}}
    assert control_flags(blind, metrics, ["gan"]) == [
        "near_copy_share: blurred (0.8) ranks at or better than gan (0.9)"]


def test_evaluation_report_trains_the_domain_encoder_once_and_scores_the_controls(images, tmp_path):
    """The bundles' evaluation: the encoder is trained on the training images into the given file and reused; the
    controls are scored beside the model, the negative controls rank below the floor, and an untrained generator is
    flagged (controls rank at or better than it)."""
    from monai_neurosql import QuantileLattice
    from monai_neurosql.metrics import evaluation_report
    from monai_neurosql.networks import ConvGenerator

    generator = ConvGenerator(spatial_dims=2, latent_size=2, spatial_size=16, channels=(8, 8)).eval()
    encoder_file = tmp_path / "domain_encoder.pt"
    args = (generator, QuantileLattice.create(kind="sobol_gaussian", n=64, d=2), images["train"], images["reference"],
            tmp_path / "eval")
    metrics = evaluation_report(*args, num_samples=120, domain_encoder=encoder_file, unseen_images=images["unseen"],
                                encoder_epochs=2)
    assert encoder_file.is_file() and load_domain_encoder(encoder_file).info["num_images"] == 200
    controls = metrics["controls"]
    assert set(controls) == {"real_unseen", "real_train", "noise", "mean_image", "blurred", "phase_scrambled"}
    for control in ("noise", "mean_image", "blurred"):
        assert controls[control]["kid"] > controls["real_unseen"]["kid"], control
    # 120 held-out images are too few for the audit's thresholds (400): it says so instead of a share
    assert str(controls["real_train"]["near_copy_share"]).startswith("n<min (120<")
    assert isinstance(metrics["kid"], float)
    assert any(line.startswith("kid: noise") and line.endswith(f"model ({metrics['kid']:.4g})")
               for line in metrics["control_flags"])
    stamp = encoder_file.stat().st_mtime_ns
    again = evaluation_report(*args, num_samples=120, domain_encoder=encoder_file, unseen_images=images["unseen"])
    assert encoder_file.stat().st_mtime_ns == stamp and again["kid"] == metrics["kid"]


def _brute_force_difference(r, a, b):
    from monai_neurosql.metrics import kernel_distance as kd

    def diff(rr, aa, bb):
        return kd(rr, aa)["kid"] - kd(rr, bb)["kid"]

    groups = []
    for which, f in enumerate((r, a, b)):
        loo = []
        for i in range(len(f)):
            sets = [r, a, b]
            sets[which] = torch.cat([f[:i], f[i + 1:]])
            loo.append(diff(*sets))
        groups.append(torch.tensor(loo, dtype=torch.float64))
    variance = sum((len(v) - 1) / len(v) * ((v - v.mean()) ** 2).sum() for v in groups)
    return diff(r, a, b), math.sqrt(float(variance))


def test_kid_difference_is_the_difference_with_the_jackknife_se_of_the_difference():
    g = torch.Generator().manual_seed(2)
    r, a, b = torch.randn(9, 3, generator=g), torch.randn(8, 3, generator=g) + 0.5, torch.randn(10, 3, generator=g)
    result = kid_difference(r, a, b)
    value, se = _brute_force_difference(r, a, b)
    assert result["difference"] == pytest.approx(value, abs=1e-10)
    assert result["se"] == pytest.approx(se, rel=1e-8)
    assert result["difference"] == pytest.approx(kernel_distance(r, a)["kid"] - kernel_distance(r, b)["kid"], abs=1e-10)
    assert result["kid_a"] == pytest.approx(kernel_distance(r, a)["kid"], abs=1e-10)
    assert result["kid_b"] == pytest.approx(kernel_distance(r, b)["kid"], abs=1e-10)
    with pytest.raises(ValueError, match="at least 3"):
        kid_difference(r, a[:2], b)
    with pytest.raises(ValueError, match="one F"):
        kid_difference(r, a[:, :2], b)


def test_kid_difference_resolves_what_independent_errors_hide():
    """Two models a little apart, a small varying reference: the paired SE predicts the spread of the difference over
    independent draws (within 2x) and is smaller than the two KIDs' SEs combined as if independent."""
    g = torch.Generator().manual_seed(3)
    diffs, paired, independent = [], [], []
    for _ in range(30):
        r = torch.randn(40, 4, generator=g) * 1.5
        a, b = torch.randn(200, 4, generator=g) + 0.2, torch.randn(200, 4, generator=g) + 0.5
        result = kid_difference(r, a, b)
        diffs.append(result["difference"])
        paired.append(result["se"])
        ka, kb = kernel_distance(r, a), kernel_distance(r, b)
        independent.append(math.hypot(ka["kid_se"], kb["kid_se"]))
    spread, mean_se = torch.tensor(diffs).std().item(), sum(paired) / len(paired)
    assert 0.5 < mean_se / spread < 2.0
    assert mean_se < 0.7 * sum(independent) / len(independent)
    assert sum(diffs) / len(diffs) < -2 * spread / math.sqrt(len(diffs))  # a is closer on average

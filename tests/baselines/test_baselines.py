from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_neurosql.baselines import (
    VAE,
    DDPMTrainer,
    Discriminator,
    GANTrainer,
    MLPEncoder,
    VAETrainer,
    matched_diffusion_unet,
)
from monai_neurosql.networks import ConvGenerator, count_parameters
from tests.helpers import shapes


def _loader(n=64, labels=False, batch_size=16):
    images, classes = shapes(n, size=16, seed=0)
    items = [{"image": images[i], **({"label": int(classes[i])} if labels else {})} for i in range(n)]
    return DataLoader(Dataset(items), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def _losses(trainer, key="loss"):
    from ignite.engine import Events

    values = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: values.append(e.state.output[key]))
    return values


def _gen(num_classes=None):
    torch.manual_seed(0)
    return ConvGenerator(2, 4, spatial_size=16, channels=(32, 16, 8), num_classes=num_classes)


def test_vae_loss_falls_and_samples():
    generator = _gen()
    vae = VAE(generator, MLPEncoder((1, 16, 16), 4, hidden=(64,)))
    trainer = VAETrainer("cpu", 6, _loader(), vae, torch.optim.AdamW(vae.parameters(), 3e-3), beta=0.005)
    losses = _losses(trainer)
    trainer.run()
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    assert {"recon_loss", "kl"} <= set(trainer.state.output)
    sample = trainer.sample(5, seed=1)
    assert sample.shape == (5, 1, 16, 16) and torch.equal(sample, trainer.sample(5, seed=1))


def test_conditional_vae_needs_labels():
    generator = _gen(num_classes=2)
    vae = VAE(generator, MLPEncoder((1, 16, 16), 4, hidden=(32,), num_classes=2))
    trainer = VAETrainer("cpu", 1, _loader(labels=True), vae, torch.optim.AdamW(vae.parameters(), 1e-3))
    trainer.run()
    assert trainer.sample(4, labels=torch.tensor([0, 1, 0, 1])).shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"):
        MLPEncoder((1, 16, 16), 4, num_classes=2)(torch.rand(2, 1, 16, 16))


def test_gan_trains_both_players():
    generator, disc = _gen(), Discriminator(2, 1)
    before = [p.clone() for p in disc.parameters()]
    trainer = GANTrainer("cpu", 3, _loader(), generator, disc, torch.optim.AdamW(generator.parameters(), 2e-4),
                         torch.optim.AdamW(disc.parameters(), 2e-4))
    d_losses = _losses(trainer, "d_loss")
    trainer.run()
    # the discriminator learns to separate real from generated images
    assert sum(d_losses[-4:]) / 4 < sum(d_losses[:4]) / 4
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    assert trainer.sample(3).shape == (3, 1, 16, 16)
    assert Discriminator(3, 1, num_classes=3)(torch.rand(2, 1, 8, 8, 8), torch.tensor([0, 2])).shape == (2,)


def test_ddpm_matches_capacity_and_loss_falls():
    generator = ConvGenerator(2, 16, spatial_size=28, channels=(64, 32, 16))  # 77k parameters
    target = count_parameters(generator)
    unet = matched_diffusion_unet(2, 1, target)
    assert abs(count_parameters(unet) - target) <= 0.1 * target
    trainer = DDPMTrainer("cpu", 8, _loader(batch_size=32), unet, torch.optim.AdamW(unet.parameters(), 2e-3),
                          spatial_shape=(16, 16), num_inference_steps=5)
    losses = _losses(trainer)
    torch.manual_seed(0)
    trainer.run()
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4
    sample = trainer.sample(3, seed=0)
    assert sample.shape == (3, 1, 16, 16) and 0 <= sample.min() and sample.max() <= 1
    with pytest.raises(ValueError, match="within 10%"):
        matched_diffusion_unet(2, 1, 10, widths=(8, 16))


def test_ddpm_sampler_recovers_the_image_with_an_oracle_denoiser():
    """With the exact noise predictor of a one-image data set, the 100-step reverse process must return it."""
    import types

    from monai.networks.schedulers import DDPMScheduler

    from monai_neurosql.baselines.ddpm import DDPMTrainer

    x0 = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    alpha_bar = scheduler.alphas_cumprod

    class Oracle(torch.nn.Module):
        def forward(self, x, timesteps, context=None, class_labels=None):
            a = alpha_bar[timesteps.long()].view(-1, 1, 1, 1)
            return (x - a.sqrt() * x0) / (1 - a).sqrt()

    fake = types.SimpleNamespace(state=types.SimpleNamespace(device=torch.device("cpu")), scheduler=scheduler,
                                 num_inference_steps=100, unet=Oracle(), ema=None, in_channels=1,
                                 spatial_shape=(16, 16))
    samples = DDPMTrainer.sample(fake, 4, seed=0)
    assert samples.shape == (4, 1, 16, 16)
    torch.testing.assert_close(samples, ((x0 + 1) / 2).expand(4, -1, -1, -1), rtol=0, atol=1e-3)


@pytest.mark.parametrize("steps", [100, 1000])
def test_ddpm_sampler_reproduces_a_gaussian_data_distribution_with_its_exact_denoiser(steps):
    """Data x0 ~ N(0.4, 0.1^2) per pixel (in [-1, 1] units) has the exact noise predictor
    E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) m) / (a s^2 + 1 - a). The reverse process must return samples with
    that mean and spread, with 100 strided steps as with all 1000: a sampler that leaves noise in (MONAI's DDPM
    step with a stride, which steps from t to t - 1 only) gives a spread of about 0.8 instead of 0.1. The one-image
    oracle above cannot see that: its last step returns the image whatever came before."""
    import types

    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    from monai_neurosql.baselines.ddpm import DDPMTrainer

    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    torch.testing.assert_close(DDIMScheduler(1000, schedule="linear_beta").alphas_cumprod, scheduler.alphas_cumprod)
    alpha_bar, m, s = scheduler.alphas_cumprod, 0.4, 0.1

    class Oracle(torch.nn.Module):
        def forward(self, x, timesteps, context=None, class_labels=None):
            a = alpha_bar[timesteps.long()].view(-1, 1, 1, 1)
            return (1 - a).sqrt() * (x - a.sqrt() * m) / (a * s**2 + 1 - a)

    fake = types.SimpleNamespace(state=types.SimpleNamespace(device=torch.device("cpu")), scheduler=scheduler,
                                 num_inference_steps=steps, unet=Oracle(), ema=None, in_channels=1,
                                 spatial_shape=(8, 8))
    samples = DDPMTrainer.sample(fake, 64, seed=0) * 2 - 1  # back to [-1, 1]
    assert abs(samples.mean().item() - m) < 0.02 and 0.08 < samples.std().item() < 0.12


def test_ddpm_sampling_is_a_function_of_the_seed_only():
    """MONAI's DiffusionInferer.sample with the seeded scheduler: the global RNG does not change the samples."""
    unet = matched_diffusion_unet(2, 1, 30_000, tolerance=100.0, widths=(8,))  # the smallest U-Net
    trainer = DDPMTrainer("cpu", 1, _loader(n=8, batch_size=8), unet, torch.optim.Adam(unet.parameters(), 1e-3),
                          spatial_shape=(16, 16), num_inference_steps=3)
    torch.manual_seed(1)
    a = trainer.sample(2, seed=5)
    torch.manual_seed(2)
    b = trainer.sample(2, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, trainer.sample(2, seed=6))


def test_ddim_images_of_a_seed_do_not_depend_on_the_sampling_batch():
    """The CPU samples DDIM chains in small batches (faster per image); the start noise is still drawn in blocks of
    NOISE_BLOCK images, so each image is the one a single batch of NOISE_BLOCK gives, conditional labels included."""
    from monai_neurosql.baselines.ddpm import CPU_SAMPLE_BATCH, NOISE_BLOCK

    unet = matched_diffusion_unet(2, 1, 30_000, tolerance=100.0, widths=(8,), num_classes=2)
    trainer = DDPMTrainer("cpu", 1, _loader(n=8, batch_size=8), unet, torch.optim.Adam(unet.parameters(), 1e-3),
                          spatial_shape=(8, 8), num_inference_steps=2, num_train_timesteps=10)
    num = NOISE_BLOCK + 5  # two noise blocks, the second partial
    labels = torch.arange(num) % 2
    whole = trainer.sample(num, seed=3, labels=labels, batch_size=NOISE_BLOCK)
    for batch_size in (None, 7):  # the CPU default (CPU_SAMPLE_BATCH), and 7 (noise drawn 7 at a time would differ)
        torch.testing.assert_close(trainer.sample(num, seed=3, labels=labels, batch_size=batch_size), whole,
                                   rtol=0, atol=1e-5)
    assert CPU_SAMPLE_BATCH < NOISE_BLOCK
    first = trainer.sample(5, seed=3, labels=labels[:5], batch_size=2)  # the first images, from the first noise
    torch.testing.assert_close(first, whole[:5], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.sample(2, batch_size=0)


def test_gan_hinge_loss_with_spectral_norm_and_dcgan_settings():
    from monai_neurosql.baselines import dcgan_init

    generator, disc = dcgan_init(_gen()), dcgan_init(Discriminator(2, 1, spectral_norm=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules())
    assert hasattr(disc.body[0], "parametrizations")  # spectrally normalized
    g_opt, d_opt = GANTrainer.dcgan_optimizers(generator, disc)
    assert g_opt.defaults["lr"] == 2e-4 and g_opt.defaults["betas"] == (0.5, 0.999)
    trainer = GANTrainer("cpu", 1, _loader(n=32), generator, disc, g_opt, d_opt, loss="hinge", grad_clip_norm=None)
    trainer.run()
    assert {"g_loss", "d_loss"} <= set(trainer.state.output)
    with pytest.raises(ValueError, match="loss must be one of"):
        GANTrainer("cpu", 1, _loader(n=8), generator, disc, g_opt, d_opt, loss="wasserstein")


def test_ddpm_samples_from_the_moving_average_of_its_weights():
    """With ema_decay the trainer keeps the warmed-up exponential average of the weights (checked against the
    recursion on the weights after each step) and samples from it, not from the last weights."""
    from ignite.engine import Events

    unet = matched_diffusion_unet(2, 1, 30_000, tolerance=100.0, widths=(8,))
    trainer = DDPMTrainer("cpu", 1, _loader(n=32, batch_size=8), unet, torch.optim.Adam(unet.parameters(), 1e-2),
                          spatial_shape=(16, 16), num_inference_steps=3, ema_decay=0.5)
    after = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: after.append([p.detach().clone() for p in e.unet.parameters()]))
    trainer.run()
    expected = after[0]  # the first update copies; then rate min(0.5, (1 + n) / (10 + n)) with n updates so far
    for n, weights in enumerate(after[1:], start=1):
        rate = min(0.5, (1 + n) / (10 + n))
        expected = [rate * e + (1 - rate) * w for e, w in zip(expected, weights)]
    for average, value in zip(trainer.ema.module.parameters(), expected):
        torch.testing.assert_close(average, value)
    assert not all(torch.equal(a, b) for a, b in zip(trainer.ema.module.parameters(), unet.parameters()))
    raw = DDPMTrainer("cpu", 1, [], unet, torch.optim.Adam(unet.parameters()), spatial_shape=(16, 16),
                      num_inference_steps=3)
    assert not torch.equal(trainer.sample(2, seed=0), raw.sample(2, seed=0))
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        DDPMTrainer("cpu", 1, [], unet, torch.optim.Adam(unet.parameters()), spatial_shape=(16, 16), ema_decay=1.0)

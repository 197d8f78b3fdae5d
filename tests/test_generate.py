from __future__ import annotations

import pytest
import torch

from monai_neurosql import QuantileLattice, SSIML1Loss, pairwise_cost
from monai_neurosql.generate import decode, embed, generate, inference_layout, training_layout
from monai_neurosql.networks import ConvGenerator, FiLMUNetGenerator


def _net(**kw):
    torch.manual_seed(0)
    return ConvGenerator(2, 4, spatial_size=16, channels=(16, 8), **kw)


def test_generate_is_seeded_and_restores_train_mode():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(32, 4)
    a = generate(net, 5, lattice, seed=3, batch_size=2)
    b = generate(net, 5, lattice, seed=3)
    assert a.shape == (5, 1, 16, 16) and a.device.type == "cpu" and net.training
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, generate(net, 5, lattice, seed=4))
    with pytest.raises(ValueError, match="positive"):
        generate(net, 0, lattice)


def test_generate_class_conditional_labels():
    net = _net(num_classes=3)
    lattice = QuantileLattice.sobol_gaussian(8, 4)
    assert generate(net, 4, lattice, labels=2).shape == (4, 1, 16, 16)
    assert generate(net, 3, lattice, labels=[0, 1, 2]).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="one label or one per sample"):
        generate(net, 3, lattice, labels=[0, 1])
    assert decode(net, lattice.points[:3], 1, batch_size=1).shape == (3, 1, 16, 16)


def test_embed_improves_on_random_codes():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(64, 4)
    target_codes = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    images = decode(net, target_codes)
    loss = SSIML1Loss(2, reduction="none")
    codes0 = embed(net, images, lattice, steps=0)
    codes = embed(net, images, lattice, steps=40, lr=0.05)
    random_loss = loss(decode(net, torch.randn(6, 4)), images).mean()
    lattice_loss = loss(decode(net, codes0), images).mean()
    refined_loss = loss(decode(net, codes), images).mean()
    assert codes.shape == (6, 4)
    assert refined_loss <= lattice_loss < random_loss
    assert all(p.requires_grad for p in net.parameters())  # generator left as it was


def test_embed_searches_the_lattice_under_the_given_loss():
    net = _net()
    lattice = QuantileLattice.sobol_gaussian(64, 4)
    images = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    outputs = decode(net, lattice.points)
    for loss in (SSIML1Loss(2, win_size=5, reduction="none"), SSIML1Loss(2, reduction="none")):
        expected = lattice.points[pairwise_cost(images, outputs, loss=loss).argmin(1)]
        torch.testing.assert_close(embed(net, images, lattice, steps=0, loss_function=loss), expected)
    small = embed(net, images, lattice, steps=0, loss_function=SSIML1Loss(2, win_size=5, reduction="none"))
    assert not torch.equal(small, embed(net, images, lattice, steps=0))  # the window changes the best points


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_decode_channels_last_gives_the_same_images_and_restores_the_weights(spatial_dims):
    torch.manual_seed(0)
    net = ConvGenerator(spatial_dims, 4, spatial_size=8, channels=(16, 8))
    params = list(net.parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    codes = torch.randn(6, 4)
    fast = decode(net, codes, batch_size=4)
    plain = decode(net, codes, batch_size=4, channels_last=False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert fast.is_contiguous() and net.training
    # the weights are the same objects, stored as before, and still the optimizer's
    assert all(p is q and p.is_contiguous() for p, q in zip(net.parameters(), params))
    assert all(p is q for p, q in zip(optimizer.param_groups[0]["params"], params))
    with inference_layout(net) as inner:  # channels-last inside the context
        assert inner is net and not all(p.is_contiguous() for p in net.parameters() if p.dim() > 2)
    assert all(p.is_contiguous() for p in net.parameters())
    # a model its owner keeps channels-last stays so
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    net.to(memory_format=fmt)
    decode(net, codes)
    assert not all(p.is_contiguous() for p in net.parameters() if p.dim() > 2)


def test_training_layout_lays_out_once_finds_the_dimension_and_leaves_other_networks_alone():
    from monai.networks.nets import DiffusionModelUNet

    unet = DiffusionModelUNet(2, 1, 1, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1,
                              norm_num_groups=4)
    assert not hasattr(unet, "spatial_dims") and training_layout(unet)  # 2D from its convolution weights
    assert not all(p.is_contiguous() for p in unet.parameters() if p.dim() == 4)
    assert not training_layout(unet)  # already laid out
    net = _net()
    assert not training_layout(net, enabled=False) and all(p.is_contiguous() for p in net.parameters())
    assert not training_layout(torch.nn.Linear(3, 4))  # no convolutions
    mixed = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv3d(2, 2, 3))
    assert not training_layout(mixed) and all(p.is_contiguous() for p in mixed.parameters())
    # the FiLM U-Net runs slower channels-last (its instance norms), also inside another network (a VAE)
    film = torch.nn.Sequential(FiLMUNetGenerator(2, 4, spatial_size=8, channels=(8, 8)), torch.nn.Conv2d(1, 1, 1))
    assert not training_layout(film) and all(p.is_contiguous() for p in film.parameters())
    with inference_layout(film):
        assert all(p.is_contiguous() for p in film.parameters())


def test_inference_layout_restores_the_weights_after_an_exception():
    net = _net()
    with pytest.raises(RuntimeError, match="boom"), inference_layout(net):
        raise RuntimeError("boom")
    assert all(p.is_contiguous() for p in net.parameters())


def test_a_missing_checkpoint_names_the_other_one_the_run_wrote(tmp_path):
    from monai_neurosql.synthetic import load_generator_checkpoint

    with pytest.raises(FileNotFoundError, match="model.pt' not found; run the bundle's train.json first"):
        load_generator_checkpoint(tmp_path / "model.pt")
    torch.save({"generator": {}}, tmp_path / "best.pt")
    with pytest.raises(FileNotFoundError, match=r"best.pt \(the lowest validation assignment cost\) exists: pass ckpt"):
        load_generator_checkpoint(tmp_path / "model.pt")
    torch.save({"generator": {}, "trainer": {"iteration": 6, "epoch_length": 3}}, tmp_path / "model.pt")
    (tmp_path / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.pt \(the last epoch\) exists"):
        load_generator_checkpoint(tmp_path / "best.pt")
    assert load_generator_checkpoint(tmp_path / "model.pt")["trainer"]["epoch_length"] == 3

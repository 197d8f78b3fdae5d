from __future__ import annotations

import json

import pytest
import torch

from monai_neurosql.networks import (
    ConvGenerator,
    FiLMUNetGenerator,
    LatentGenerator,
    ResNetGenerator,
    count_parameters,
    generator_args,
    generator_builder,
    generator_class,
    generator_path,
)

SMALL = {
    ConvGenerator: {"channels": (16, 8, 8)},
    ResNetGenerator: {"channels": (16, 8, 8)},
    FiLMUNetGenerator: {"channels": (8, 16), "film_hidden": 16},
}
CASES = [(2, 28), (2, (20, 37)), (2, 64), (3, 16), (3, (8, 12, 10))]


@pytest.mark.parametrize("cls", list(SMALL))
@pytest.mark.parametrize("spatial_dims,size", CASES)
def test_shape_range_and_gradient(cls, spatial_dims, size):
    torch.manual_seed(0)
    net = cls(spatial_dims, latent_size=5, out_channels=2, spatial_size=size, **SMALL[cls])
    z = torch.randn(3, 5, requires_grad=True)
    out = net(z)
    expected = (size,) * spatial_dims if isinstance(size, int) else size
    assert out.shape == (3, 2, *expected)
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # the output depends on z
    assert count_parameters(net) == sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("cls", list(SMALL))
def test_class_conditioning(cls):
    torch.manual_seed(0)
    net = cls(2, latent_size=4, spatial_size=16, num_classes=3, **SMALL[cls]).eval()
    z = torch.randn(2, 4)
    a, b = net(z, torch.tensor([0, 0])), net(z, torch.tensor([2, 2]))
    assert a.shape == (2, 1, 16, 16) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass labels"):
        net(z)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        net(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 codes"):
        net(z, torch.tensor([0]))
    unconditional = cls(2, latent_size=4, spatial_size=16, **SMALL[cls])
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(z, torch.tensor([0, 1]))


def test_paper_scale_widths_and_act_norm_from_config():
    net = ConvGenerator(2, 16, spatial_size=64, channels=(512, 256, 128, 64),
                        act=("leakyrelu", {"negative_slope": 0.2}),
                        norm=("batch", {"momentum": 0.05}))
    assert net(torch.randn(2, 16)).shape == (2, 1, 64, 64)
    assert count_parameters(net) > count_parameters(ConvGenerator(2, 16, spatial_size=64))
    raw = ResNetGenerator(2, 4, spatial_size=16, channels=(8, 8), out_act=None)
    assert raw(torch.randn(2, 4)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("kwargs,match", [
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"latent_size": 0}, "latent_size"),
    ({"out_channels": 0}, "out_channels"),
    ({"spatial_size": 0}, "spatial_size"),
    ({"num_classes": 0}, "num_classes"),
    ({"channels": ()}, "channels"),
])
@pytest.mark.parametrize("cls", list(SMALL))
def test_bad_arguments(cls, kwargs, match):
    args = {"spatial_dims": 2, "latent_size": 4, "spatial_size": 16, **SMALL[cls], **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(**args)


def test_wrong_latent_shape():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        ConvGenerator(2, 4, spatial_size=16, channels=(8, 8))(torch.randn(2, 5))


def test_conv_generator_loads_checkpoints_from_before_monai_adn():
    torch.manual_seed(0)
    net = ConvGenerator(2, 4, spatial_size=16, channels=(8, 8), act=("leakyrelu", {"negative_slope": 0.1})).eval()
    assert [type(m).__name__ for m in net.project_adn.children()] == ["BatchNorm2d", "LeakyReLU"]
    old_layout = {k.replace("project_adn.N.", "project_adn.0."): v + 0.5 if v.is_floating_point() else v
                  for k, v in net.state_dict().items()}
    assert any(k.startswith("project_adn.0.") for k in old_layout)
    other = ConvGenerator(2, 4, spatial_size=16, channels=(8, 8), act=("leakyrelu", {"negative_slope": 0.1})).eval()
    other.load_state_dict(old_layout)  # strict: every old key is read
    torch.testing.assert_close(other.project_adn.N.running_mean, old_layout["project_adn.0.running_mean"])
    wrapped = torch.nn.Sequential(ConvGenerator(2, 4, spatial_size=16, channels=(8, 8)))
    wrapped.load_state_dict({f"0.{k}": v for k, v in old_layout.items()})  # also below a parent module


@pytest.mark.parametrize("cls", list(SMALL))
def test_the_recorded_generator_path_builds_the_same_class(cls):
    from torch.nn.parallel import DistributedDataParallel

    net = cls(2, latent_size=4, spatial_size=16, **SMALL[cls])
    path = generator_path(net)
    assert generator_class({"network": path}) is cls
    wrapped = DistributedDataParallel.__new__(DistributedDataParallel)  # only .module is read
    torch.nn.Module.__init__(wrapped)
    wrapped.module = net
    assert generator_path(wrapped) == path


def test_runs_without_a_recorded_generator_build_the_conv_generator_and_a_bad_path_is_named():
    assert generator_class({}) is ConvGenerator and generator_class(None) is ConvGenerator
    with pytest.raises(ValueError, match="'monai_neurosql.networks.NoSuchNet'.*correct 'network'"):
        generator_class({"network": "monai_neurosql.networks.NoSuchNet"})
    for not_a_generator in ("torch.zeros", "torch.nn.Linear"):
        with pytest.raises(ValueError, match="does not import as a NeuroSQL generator class"):
            generator_class({"network": not_a_generator})


# settings other than the class's defaults, each of which changes the weights' shapes or the images
NON_DEFAULT = {
    ConvGenerator: {"kernel_size": 5, "act": "leakyrelu"},
    ResNetGenerator: {"act": ("leakyrelu", {"negative_slope": 0.3}), "norm": "instance"},
    FiLMUNetGenerator: {"film_hidden": 24, "act": "elu"},
}


@pytest.mark.parametrize("cls", list(SMALL))
def test_the_recorded_settings_rebuild_the_trained_network(cls):
    torch.manual_seed(0)
    net = cls(2, 4, 1, 16, num_classes=3, class_embed_size=2, **{**SMALL[cls], **NON_DEFAULT[cls]}).eval()
    info = json.loads(json.dumps({"network": generator_path(net), "network_args": generator_args(net)}))
    assert info["network_args"]["class_embed_size"] == 2 and "channels" not in info["network_args"]
    shared = {"spatial_dims": 2, "latent_size": 4, "out_channels": 1, "spatial_size": 16,
              "channels": list(SMALL[cls]["channels"]), "num_classes": 3}
    rebuilt = generator_builder(info)(**shared).eval()
    rebuilt.load_state_dict(net.state_dict())
    z, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(rebuilt(z, labels), net(z, labels))
    # without the record (runs written before it) the class's defaults give another network
    default = generator_class(info)(**shared).eval()
    try:
        default.load_state_dict(net.state_dict())
    except RuntimeError:  # other shapes: refused, the loader's error names the fix
        return
    assert not torch.allclose(default(z, labels), net(z, labels))  # same shapes, other activation: other images


def test_a_setting_without_a_json_form_is_named_and_left_out():
    class Tagged(ConvGenerator):
        def __init__(self, spatial_dims, latent_size, out_channels=1, spatial_size=64, channels=(8,), tag=None,
                     **kwargs):
            super().__init__(spatial_dims, latent_size, out_channels, spatial_size, channels, **kwargs)

    with pytest.warns(UserWarning, match=r"setting tag=<object.*network_def#tag"):
        args = generator_args(Tagged(2, 4, spatial_size=8, tag=object()))
    assert "tag" not in args and args["out_act"] == "sigmoid"
    assert isinstance(generator_builder({}), type) and generator_builder({}) is ConvGenerator
    assert issubclass(Tagged, LatentGenerator)

"""torch.export of the generators: the saved program reproduces the generator at any batch size, with its metadata."""

from __future__ import annotations

import pytest
import torch

from monai_neurosql.export import export_generator, load_exported_generator
from monai_neurosql.networks import ConvGenerator, FiLMUNetGenerator, ResNetGenerator

CASES = {
    "conv2d": lambda: ConvGenerator(2, 4, 1, spatial_size=28, channels=(16, 8, 8)),
    "conv2d_rgb_conditional": lambda: ConvGenerator(2, 4, 3, spatial_size=20, channels=(8, 8), num_classes=3),
    "conv3d": lambda: ConvGenerator(3, 4, 1, spatial_size=12, channels=(8, 8)),
    "resnet2d": lambda: ResNetGenerator(2, 4, 1, spatial_size=16, channels=(8, 8)),
    "film_unet2d_conditional": lambda: FiLMUNetGenerator(2, 4, 1, spatial_size=16, channels=(8, 16), film_hidden=16,
                                                          num_classes=2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_program_reproduces_the_generator(case, tmp_path):
    torch.manual_seed(0)
    generator = CASES[case]()
    with torch.no_grad():  # trained-looking batch-norm statistics, so eval mode differs from train mode
        generator.train()(torch.randn(32, 4), *([torch.arange(32) % generator.num_classes] if generator.num_classes
                                                else []))
    generator.eval()
    meta = {"required_packages_version": {"monai-neurosql": "0.1.0"}}
    path = export_generator(generator, tmp_path / "models" / "model.pt2", meta=meta, data_info={"prior": "gaussian"})
    program, extras = load_exported_generator(path)
    assert extras == {"metadata.json": meta, "data_info.json": {"prior": "gaussian"}}
    for batch in (1, 7):  # not the export's example batch (4)
        z = torch.randn(batch, 4, generator=torch.Generator().manual_seed(batch))
        inputs = (z,) if generator.num_classes is None else (z, torch.arange(batch) % generator.num_classes)
        with torch.no_grad():
            expected = generator(*inputs)
            torch.testing.assert_close(program(*inputs), expected, rtol=1e-5, atol=1e-6)
        assert expected.std() > 0
    assert generator.training is False and next(generator.parameters()).requires_grad  # the input is left alone


def test_export_refuses_a_program_that_does_not_reproduce_the_generator(tmp_path):
    generator = ConvGenerator(2, 4, 1, spatial_size=8, channels=(8,))
    with pytest.raises(RuntimeError, match="differ from the generator's"):
        export_generator(generator, tmp_path / "model.pt2", atol=-1.0)  # no difference passes a negative tolerance


def test_a_file_without_extras_loads_with_empty_ones(tmp_path):
    path = export_generator(ConvGenerator(2, 4, 1, spatial_size=8, channels=(8,)), tmp_path / "model.pt2")
    _, extras = load_exported_generator(path)
    assert extras == {"metadata.json": {}, "data_info.json": {}}

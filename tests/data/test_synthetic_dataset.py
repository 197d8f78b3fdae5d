"""SyntheticDataset and MixedDataset: MONAI items, labels, per-index seeding, caching, mixing, loading a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.transforms import Lambdad
from torch.utils.data import Subset

from monai_neurosql import LatentBank
from monai_neurosql.data import MixedDataset, SyntheticDataset, array_transforms, write_data_info
from monai_neurosql.networks import ConvGenerator
from tests.helpers import shapes

LATENT = 4


def tiny_generator(spatial_dims: int = 2, out_channels: int = 1, size: int = 16, num_classes: int | None = None,
                   seed: int = 0) -> ConvGenerator:
    torch.manual_seed(seed)
    return ConvGenerator(spatial_dims, LATENT, out_channels=out_channels, spatial_size=size, channels=(8, 8),
                         num_classes=num_classes).eval()


def save_run(models: Path, generator: ConvGenerator, bank: LatentBank, name: str = "model.pt",
             spacing: float = 1.0) -> Path:
    """A training run's models/ folder in the bundles' layout: checkpoint_dict entries and data_info.json."""
    models.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": generator.state_dict(), "bank": bank.state_dict(), "trainer": {"epoch": 1}},
               models / name)
    sample = MetaTensor(torch.zeros(generator.out_channels, *generator.spatial_size))
    sample.affine = torch.diag(torch.tensor([spacing] * generator.spatial_dims + [1.0] * (4 - generator.spatial_dims),
                                            dtype=torch.float64))
    write_data_info(models / "data_info.json", {"image": sample}, spatial_dims=generator.spatial_dims,
                    spatial_size=generator.spatial_size[0], latent_size=LATENT, channels=[8, 8],
                    num_classes=generator.num_classes, prior=bank.prior)
    return models / name


def images_of(dataset, indices=None) -> torch.Tensor:
    indices = range(len(dataset)) if indices is None else indices
    return torch.stack([dataset[i]["image"].as_tensor() for i in indices])


@pytest.mark.parametrize("spatial_dims,out_channels,size", [(2, 1, 16), (2, 3, 16), (3, 1, 8)])
def test_items_shapes_range_and_meta(spatial_dims, out_channels, size):
    ds = SyntheticDataset(tiny_generator(spatial_dims, out_channels, size), LatentBank.create(8, LATENT),
                          num_samples=5, seed=3, spacing=[0.5] * spatial_dims)
    assert len(ds) == 5
    item = ds[2]
    assert set(item) == {"image", "synthetic"} and item["synthetic"] is True  # unconditional: no label
    image = item["image"]
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert image.shape == (out_channels, *(size,) * spatial_dims)
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0
    assert image.meta["synthetic"] is True and image.meta["seed"] == 3 and image.meta["index"] == 2
    assert image.meta["filename_or_obj"] == "synthetic_000002" and image.meta["checkpoint"] == ""
    assert image.affine[0, 0] == 0.5 and image.affine.shape == (4, 4)
    assert torch.equal(ds[-1]["image"], ds[4]["image"])
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    assert len(list(ds)) == 5  # plain iteration stops at the end


def test_conditional_labels_reach_the_generator():
    generator = tiny_generator(num_classes=3)
    bank = LatentBank.class_conditional([0, 0, 1, 1, 2, 2], LATENT)
    ds = SyntheticDataset(generator, bank, num_per_class={2: 3, 0: 2})
    assert ds.labels.tolist() == [0, 0, 2, 2, 2] and [ds[i]["label"] for i in range(5)] == [0, 0, 2, 2, 2]
    codes = ds.latent_codes(range(5))
    with torch.no_grad():
        expected = generator(codes, ds.labels)
        other_class = generator(codes, (ds.labels + 1) % 3)
    torch.testing.assert_close(images_of(ds), expected, atol=1e-6, rtol=0)
    assert (images_of(ds) - other_class).abs().max() > 1e-3  # the label changes the image, so it was used
    assert SyntheticDataset(generator, bank, num_samples=4, labels=1).labels.tolist() == [1, 1, 1, 1]
    assert SyntheticDataset(generator, bank, num_samples=5).labels.tolist() == [0, 1, 2, 0, 1]  # classes in turn
    assert len(SyntheticDataset(generator, bank, labels=[2, 1])) == 2
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        SyntheticDataset(generator, bank, labels=[0, 3])
    with pytest.raises(ValueError, match="num_samples=3 but 2 labels"):
        SyntheticDataset(generator, bank, num_samples=3, labels=[0, 1])
    with pytest.raises(ValueError, match="labels or num_per_class, not both"):
        SyntheticDataset(generator, bank, labels=[0], num_per_class={0: 1})
    with pytest.raises(ValueError, match="unconditional"):
        SyntheticDataset(tiny_generator(), LatentBank.create(4, LATENT), num_samples=2, labels=0)
    with pytest.raises(ValueError, match="pass num_samples"):
        SyntheticDataset(tiny_generator(), LatentBank.create(4, LATENT))
    with pytest.raises(ValueError, match="8-d"):
        SyntheticDataset(generator, LatentBank.create(4, 8), num_samples=2)


def test_conditional_samples_look_like_their_class():
    """A conditional generator fitted to the class means: every item of class c is nearest to class c's mean."""
    images, labels = shapes(40, size=16)
    means = torch.stack([images[labels == c].mean(0) for c in (0, 1)])
    generator = tiny_generator(num_classes=2).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.03)
    for _ in range(25):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(generator(torch.randn(len(labels), LATENT), labels), images).backward()
        optimizer.step()
    ds = SyntheticDataset(generator, LatentBank.create(4, LATENT), num_per_class={0: 4, 1: 4}, seed=5)
    distance = torch.cdist(images_of(ds).flatten(1), means.flatten(1))
    assert distance.argmin(1).tolist() == ds.labels.tolist()


def test_seeding_is_per_index():
    generator, bank = tiny_generator(), LatentBank.create(8, LATENT)
    ds = SyntheticDataset(generator, bank, num_samples=6, seed=1)
    forward = images_of(ds)
    assert torch.equal(forward, images_of(SyntheticDataset(generator, bank, num_samples=6, seed=1)))
    assert torch.equal(forward.flip(0), images_of(ds, range(5, -1, -1)))  # order does not matter
    assert torch.equal(forward[:3], images_of(SyntheticDataset(generator, bank, num_samples=3, seed=1)))  # a prefix
    assert (forward - images_of(SyntheticDataset(generator, bank, num_samples=6, seed=2))).abs().amax((1, 2, 3)).min() > 0
    assert len({round(float(x.sum()), 4) for x in forward}) == 6  # the items differ from each other
    with pytest.raises(ValueError, match="non-negative int"):
        SyntheticDataset(generator, bank, num_samples=2, seed=-1)
    # the dataset keeps its own copy of the generator: training the caller's generator does not change it
    with torch.no_grad():
        next(generator.parameters()).add_(1.0)
    assert torch.equal(forward, images_of(ds))
    wrapped = SyntheticDataset(torch.nn.DataParallel(tiny_generator()), bank, num_samples=6, seed=1)  # unwrapped
    assert torch.equal(images_of(wrapped), images_of(SyntheticDataset(tiny_generator(), bank, num_samples=6, seed=1)))


def test_dataloader_batches_do_not_depend_on_workers_or_batching():
    ds = SyntheticDataset(tiny_generator(num_classes=2), LatentBank.create(8, LATENT), num_samples=10, seed=4)

    def batches(num_workers):
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(0))
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3 and serial[0]["image"].shape == (4, 1, 16, 16)
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(a["image"], b["image"], atol=1e-6, rtol=0)  # bit for bit here; kernels may vary
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["image"].meta["index"], b["image"].meta["index"])
        assert a["synthetic"].all() and a["image"].meta["synthetic"].all()
        # a batch is decoded in one pass: equal to one-by-one decoding up to float32 rounding
        single = images_of(ds, a["image"].meta["index"].tolist())
        torch.testing.assert_close(a["image"].as_tensor(), single, atol=1e-6, rtol=0)
        assert a["label"].tolist() == [ds[i]["label"] for i in a["image"].meta["index"].tolist()]


def test_cache_equals_on_the_fly_and_transform_is_applied():
    generator, bank = tiny_generator(3, size=8), LatentBank.create(8, LATENT)
    invert = Lambdad(keys="image", func=lambda x: 1 - x)
    lazy = SyntheticDataset(generator, bank, num_samples=7, seed=2)
    cached = SyntheticDataset(generator, bank, num_samples=7, seed=2, cache=True, batch_size=3, progress=False,
                              transform=invert)
    assert cached._cache is not None and cached._cache.shape == (7, 1, 8, 8, 8)
    torch.testing.assert_close(1 - images_of(cached), images_of(lazy), atol=1e-6, rtol=0)
    first = cached[0]["image"].clone()
    cached[0]["image"].zero_()  # served items are copies: the cache stays intact
    assert torch.equal(cached[0]["image"], first)
    batch = next(iter(DataLoader(cached, batch_size=7)))  # the batched path applies the transform too
    torch.testing.assert_close(batch["image"].as_tensor(), images_of(cached), atol=0, rtol=0)


def real_dataset(n: int = 12, size: int = 16) -> CacheDataset:
    """Real records as the bundles build them (uint8 arrays, label, index, subject) through MONAI transforms."""
    images, labels = shapes(n, size=size)
    records = [{"image": (images[i] * 255).to(torch.uint8).numpy(), "label": int(labels[i]), "index": i,
                "subject": f"s{i}"} for i in range(n)]
    return CacheDataset(records, array_transforms(), progress=False)


def test_mixed_dataset_overall_ratio_collates_in_a_monai_dataloader():
    real = real_dataset(12)
    synth = SyntheticDataset(tiny_generator(num_classes=2), LatentBank.create(8, LATENT), num_samples=10)
    mixed = MixedDataset(real, synth, ratio=0.5)
    assert len(mixed) == 18 and mixed.num_real == 12 and mixed.num_synthetic == 6
    seen = {True: 0, False: 0}
    for batch in DataLoader(mixed, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert set(batch) == {"image", "label", "synthetic"} and isinstance(batch["image"], MetaTensor)
        assert batch["image"].shape[1:] == (1, 16, 16) and batch["label"].dtype == torch.long
        for flag in batch["synthetic"].tolist():
            seen[flag] += 1
    assert seen == {True: 6, False: 12}
    real_item, synth_item = mixed[0], mixed[12]
    assert real_item["synthetic"] is False and synth_item["synthetic"] is True
    torch.testing.assert_close(synth_item["image"], synth[0]["image"])
    assert MixedDataset(real, synth, ratio=0).num_synthetic == 0
    with pytest.raises(ValueError, match="needs 24 synthetic items.*num_samples=24"):
        MixedDataset(real, synth, ratio=2.0)
    with pytest.raises(ValueError, match="lack the keys"):
        MixedDataset(real, synth, ratio=0.5, keys=("image", "mask"))


def test_mixed_dataset_per_class_ratio():
    real = real_dataset(12)
    real_labels = torch.tensor([r["label"] for r in real.data])
    ratio = {0: 1.0, 1: 0.5}
    counts = MixedDataset.synthetic_counts(real_labels, ratio)
    n0, n1 = int((real_labels == 0).sum()), int((real_labels == 1).sum())
    assert counts == {0: n0, 1: round(0.5 * n1)}
    generator, bank = tiny_generator(num_classes=2), LatentBank.create(8, LATENT)
    synth = SyntheticDataset(generator, bank, num_per_class=counts)
    mixed = MixedDataset(real, synth, ratio=ratio)
    batch = next(iter(DataLoader(mixed, batch_size=len(mixed))))
    flags, labels = batch["synthetic"], batch["label"]
    assert int(flags.sum()) == counts[0] + counts[1]
    assert [int((labels[flags] == c).sum()) for c in (0, 1)] == [counts[0], counts[1]]
    assert [int((labels[~flags] == c).sum()) for c in (0, 1)] == [n0, n1]
    # labels read from the items when the real dataset keeps no records (a torch Subset has no .data)
    plain = Subset(real, list(range(len(real))))
    assert MixedDataset(plain, synth, ratio=ratio).synthetic_indices == mixed.synthetic_indices
    with pytest.raises(ValueError, match=r"num_per_class=\{0: 6"):
        MixedDataset(real, SyntheticDataset(generator, bank, num_per_class={0: 1, 1: 6}), ratio=ratio)
    with pytest.raises(ValueError, match="per-class ratios need"):
        MixedDataset(real, SyntheticDataset(tiny_generator(), bank, num_samples=4), ratio=ratio)


def test_mixed_dataset_refuses_images_that_do_not_match():
    synth = SyntheticDataset(tiny_generator(size=8, num_classes=2), LatentBank.create(8, LATENT), num_samples=12)
    with pytest.raises(ValueError, match=r"real images are \(1, 16, 16\) but synthetic ones \(1, 8, 8\)"):
        MixedDataset(real_dataset(4), synth)
    unscaled = [{"image": torch.full((1, 8, 8), 200, dtype=torch.uint8), "label": 0} for _ in range(4)]
    with pytest.raises(ValueError, match=r"real images are torch.uint8.*ScaleIntensityd"):
        MixedDataset(unscaled, synth)


def test_from_run_prefers_the_last_epoch_and_reads_data_info(tmp_path):
    bank = LatentBank.create(8, LATENT)
    best, latest = tiny_generator(out_channels=3, seed=1), tiny_generator(out_channels=3, seed=2)
    models = tmp_path / "run" / "models"
    save_run(models, best, bank, "best.pt", spacing=2.0)
    save_run(models, latest, bank, "model.pt", spacing=2.0)
    ds = SyntheticDataset.from_run(tmp_path / "run", num_samples=3, seed=7)
    image = ds[1]["image"]
    assert image.shape == (3, 16, 16) and image.meta["checkpoint"] == str(models / "model.pt")
    assert image.affine[0, 0] == 2.0  # the training spacing from data_info.json
    with torch.no_grad():
        torch.testing.assert_close(image.as_tensor(), latest(ds.latent_codes([1]))[0], atol=1e-6, rtol=0)
    ds = SyntheticDataset.from_run(models / "best.pt", num_samples=3, seed=7)  # the file itself selects best.pt
    with torch.no_grad():
        torch.testing.assert_close(ds[1]["image"].as_tensor(), best(ds.latent_codes([1]))[0], atol=1e-6, rtol=0)
    (models / "model.pt").rename(tmp_path / "latest.pt")
    ds = SyntheticDataset.from_run(models, num_samples=3, seed=7)  # the models folder works too; best.pt if alone
    assert ds[0]["image"].meta["checkpoint"] == str(models / "best.pt")
    (tmp_path / "latest.pt").rename(models / "model.pt")
    # a checkpoint file with its settings given as a dict, and weights saved from a DDP-wrapped network
    info = json.loads((models / "data_info.json").read_text())
    state = torch.load(models / "model.pt", weights_only=True)
    state["generator"] = {f"module.{k}": v for k, v in state["generator"].items()}
    torch.save(state, tmp_path / "ddp.pt")
    ds = SyntheticDataset.from_run(tmp_path / "ddp.pt", data_info=info, num_samples=2)
    assert ds[0]["image"].shape == (3, 16, 16)


def test_from_run_errors_name_what_is_missing(tmp_path):
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in '.*empty/models': expected model.pt or best.pt"):
        SyntheticDataset.from_run(empty, num_samples=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SyntheticDataset.from_run(tmp_path / "nowhere", num_samples=1)
    ckpt = save_run(tmp_path / "run" / "models", tiny_generator(), LatentBank.create(8, LATENT))
    (ckpt.parent / "data_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="data_info.json"):
        SyntheticDataset.from_run(tmp_path / "run", num_samples=1)
    with pytest.raises(ValueError, match=r"lacks the generator settings \['channels'\]"):
        SyntheticDataset.from_run(ckpt, num_samples=1, data_info={"spatial_dims": 2, "latent_size": LATENT,
                                                                   "spatial_size": 16, "shape": [1, 16, 16]})
    wrong = {"spatial_dims": 2, "latent_size": LATENT, "spatial_size": 16, "channels": [16, 8], "shape": [1, 16, 16]}
    with pytest.raises(ValueError, match="do not fit the network"):
        SyntheticDataset.from_run(ckpt, num_samples=1, data_info=wrong)
    # no data_info.json needed when the caller builds the network
    assert SyntheticDataset.from_run(ckpt, num_samples=2, generator=tiny_generator(seed=5))[0]["image"].shape == (1, 16, 16)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'generator' entry"):
        SyntheticDataset.from_run(tmp_path / "other.pt", num_samples=1, generator=tiny_generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generation_on_cuda_returns_cpu_items():
    generator, bank = tiny_generator(num_classes=2), LatentBank.create(8, LATENT)
    cpu = SyntheticDataset(generator, bank, num_samples=4, seed=1)
    gpu = SyntheticDataset(generator, bank, num_samples=4, seed=1, device="cuda", cache=True, progress=False)
    assert next(gpu.generator.parameters()).is_cuda
    assert gpu[0]["image"].device.type == "cpu"
    torch.testing.assert_close(images_of(gpu), images_of(cpu), atol=1e-3, rtol=0)
    on_gpu = SyntheticDataset(generator, bank, num_samples=4, seed=1, device="cuda", output_device="cuda")
    assert on_gpu[0]["image"].is_cuda
    with pytest.raises(Exception, match="num_workers=0"):
        next(iter(DataLoader(on_gpu, batch_size=2, num_workers=1)))


@pytest.mark.slow
def test_from_run_loads_a_trained_bundle_like_its_inference_config(tmp_path):
    """Train the MedMNIST bundle for one epoch (class-conditional), then compare with inference.json's network."""
    from tests.bundles.test_bundles import MEDMNIST, TINY, run_workflow
    from tests.data.test_medmnist import write_npz

    npz = write_npz(tmp_path / "tiny.npz", n=(18, 6, 6))
    run_workflow([MEDMNIST / "train.json"], tmp_path, npz_file=str(npz), conditional=True, num_classes=3,
                 **{**TINY, "num_epochs": 1})
    workflow = ConfigWorkflow(config_file=str(MEDMNIST / "inference.json"), workflow_type="infer",
                              bundle_root=str(tmp_path), meta_file=str(MEDMNIST / "metadata.json"),
                              logging_file=str(MEDMNIST / "logging.conf"))
    workflow.initialize()  # builds network_def from data_info.json and loads the checkpoint; run() would write files
    network = workflow.parser.get_parsed_content("network")
    ckpt = workflow.parser.get_parsed_content("ckpt_file")

    ds = SyntheticDataset.from_run(ckpt, num_per_class={0: 2, 2: 2}, seed=3)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 28, 28) and batch["label"].tolist() == [0, 0, 2, 2]
    with torch.no_grad():
        expected = network.eval()(ds.latent_codes(range(4)).to(next(network.parameters()).device), ds.labels)
    torch.testing.assert_close(batch["image"].as_tensor(), expected.cpu(), atol=1e-6, rtol=0)
    # the run folder itself: model.pt (the last epoch, what inference.json loads) is preferred over best.pt
    assert SyntheticDataset.from_run(tmp_path, num_samples=1)[0]["image"].meta["checkpoint"].endswith("model.pt")

"""The bundles run through monai.bundle.ConfigWorkflow on tiny data in every supported layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out

from monai_neurosql.data import build_oasis_demo, load_trained_generator, read_datalist, user_error
from monai_neurosql.export import load_exported_generator
from tests.data.test_medmnist import write_npz

ROOT = Path(__file__).resolve().parents[2]
OASIS = ROOT / "bundles" / "neurosql_oasis" / "configs"
MEDMNIST = ROOT / "bundles" / "neurosql_medmnist" / "configs"
SCHEMA = ROOT / "bundles" / "schema" / "meta_schema.json"
TINY = {"num_epochs": 2, "every_n_epochs": 1, "batch_size": 8, "latent_size": 4, "grid_every_n_epochs": 1,
        "channels": [16, 8, 8], "val_max_images": 16}


def run_workflow(configs, bundle_root, workflow_type="train", **overrides):
    configs = [str(c) for c in configs]
    workflow = ConfigWorkflow(
        config_file=configs if len(configs) > 1 else configs[0], meta_file=str(Path(configs[0]).parent / "metadata.json"),
        logging_file=str(Path(configs[0]).parent / "logging.conf"), workflow_type=workflow_type,
        bundle_root=str(bundle_root), **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def check_training_outputs(bundle_root: Path, spatial_shape: tuple[int, ...]) -> dict:
    models = bundle_root / "models"
    state = torch.load(models / "model.pt", weights_only=True)
    assert {"generator", "optimizer", "lr_scheduler", "bank", "assignment", "trainer", "early_stop", "guard",
            "checkpointer"} <= set(state)
    assert state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]
    assert len(state["assignment"]["history"]) == 2
    assert (models / "best.pt").is_file()
    info = json.loads((models / "data_info.json").read_text())
    assert tuple(info["shape"][1:]) == spatial_shape
    assert sorted((bundle_root / "runs" / "samples").glob("*.png"))
    assert any((bundle_root / "runs" / "tensorboard").iterdir())
    return info


def check_inference_outputs(bundle_root: Path, spatial_shape: tuple[int, ...], spacing: list[float], n: int) -> None:
    outputs = bundle_root / "outputs"
    files = sorted(outputs.glob("synthetic_*.nii.gz"))
    assert len(files) == n and (outputs / "synthetic_grid.png").is_file()
    img = nib.load(str(files[0]))
    data = img.get_fdata()
    assert data.shape == spatial_shape and 0 <= data.min() and data.max() <= 1 and data.std() > 0
    np.testing.assert_allclose(img.header.get_zooms()[: len(spatial_shape)], spacing, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_kaggle(tmp_path_factory):
    return build_oasis_demo(tmp_path_factory.mktemp("kaggle"), subjects_per_class=(4, 3, 3, 3), slices_per_subject=2)


@pytest.mark.slow
def test_oasis_kaggle_layout_train_resume_infer(tiny_kaggle, tmp_path):
    run_workflow([OASIS / "train.json"], tmp_path, dataset_dir=str(tiny_kaggle), spatial_size=32, **TINY,
                 split_fractions=[0.5, 0.25, 0.25])
    info = check_training_outputs(tmp_path, (32, 32))
    split = read_datalist(tmp_path / "runs" / "datalist.json")
    subjects = [{r["subject"] for r in split[name]} for name in ("training", "validation", "test")]
    assert not (subjects[0] & subjects[1]) and not (subjects[0] & subjects[2]) and not (subjects[1] & subjects[2])
    # a resumed run continues from the checkpoint's epoch 2 to epoch 3
    run_workflow([OASIS / "train.json"], tmp_path, dataset_dir=str(tiny_kaggle), spatial_size=32,
                 **{**TINY, "num_epochs": 3}, split_fractions=[0.5, 0.25, 0.25])
    trainer_state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["trainer"]
    assert trainer_state["iteration"] == 3 * trainer_state["epoch_length"]
    run_workflow([OASIS / "inference.json"], tmp_path, workflow_type="infer", num_samples=5, seed=1)
    check_inference_outputs(tmp_path, (32, 32), info["spacing"], 5)
    run_workflow([OASIS / "evaluate.json"], tmp_path, workflow_type="eval", num_samples=16, encoder_epochs=1)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"proxy_fid", "kid", "kid_se", "domain_fid", "coverage", "ssim", "ms_ssim_generated", "precision", "recall",
            "near_copy_share", "controls", "control_flags"} <= set(metrics)
    assert set(metrics["controls"]) == {"real_unseen", "real_train", "noise", "mean_image", "blurred",
                                        "phase_scrambled"}
    # 16 samples: below KID's minimum of 50 the report says so, for the model and every control alike
    assert all(str(c["kid"]).startswith("n<min (") for c in [metrics, *metrics["controls"].values()])
    assert (tmp_path / "eval" / "memorization_worst_pairs.png").is_file()
    # the domain encoder was trained on the run's training slices once, and is reused
    encoder_file = tmp_path / "eval" / "domain_encoder.pt"
    stamp = encoder_file.stat().st_mtime_ns
    run_workflow([OASIS / "evaluate.json"], tmp_path, workflow_type="eval", num_samples=16, encoder_epochs=1)
    assert encoder_file.stat().st_mtime_ns == stamp
    assert info["spacing"][0] > 1.0  # slices were downsampled from the 1 mm JPEG grid


def write_oasis1(data: Path, csv: Path, subjects: int = 12) -> tuple[Path, Path]:
    """Tiny OASIS-1 volumes (one session folder per subject) and their clinical CSV (CDR 0 or 0.5)."""
    rng = np.random.default_rng(0)
    rows = ["ID,CDR"]
    for i in range(subjects):
        sid = f"OAS1_{i + 1:04d}_MR1"
        folder = data / sid / "PROCESSED"
        folder.mkdir(parents=True)
        vol = np.zeros((24, 24, 20), dtype=np.float32)
        vol[4:20, 4:20, 2:18] = rng.uniform(20, 100, size=(16, 16, 16)) + 10 * (i % 2)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(folder / f"{sid}_t88_masked_gfc.nii.gz"))
        rows.append(f"{sid},{0.5 * (i % 2)}")
    csv.write_text("\n".join(rows) + "\n")
    return data, csv


@pytest.mark.slow
def test_oasis_volume_layout_class_conditional(tmp_path):
    data, csv = write_oasis1(tmp_path / "oasis1", tmp_path / "oasis_cross-sectional.csv")
    run_workflow([OASIS / "train.json"], tmp_path / "run", dataset_dir=str(data), csv_path=str(csv), spatial_size=16,
                 conditional=True, split_fractions=[0.7, 0.15, 0.15], **{**TINY, "channels": [8, 8]})
    info = check_training_outputs(tmp_path / "run", (16, 16))
    assert info["num_classes"] == 4
    bank = torch.load(tmp_path / "run" / "models" / "model.pt", weights_only=True)["bank"]
    assert torch.equal(bank["lattice_groups"][bank["assignment"]], bank["data_groups"])  # codes stay in class
    run_workflow([OASIS / "inference.json"], tmp_path / "run", workflow_type="infer", num_samples=4, label=1)
    check_inference_outputs(tmp_path / "run", (16, 16), info["spacing"], 4)


@pytest.mark.slow
def test_medmnist_2d_and_3d(tmp_path):
    npz2 = write_npz(tmp_path / "tiny2d.npz", shape=(28, 28), n=(24, 8, 8))
    # another backbone is one override away: data_info.json records it with its own settings (a film_hidden that is
    # not the default would not load into the default's MLP), and inference / evaluate build the same network
    film = {"network_def#_target_": "monai_neurosql.networks.FiLMUNetGenerator", "network_def#film_hidden": 12,
            "channels": [8, 16]}
    run_workflow([MEDMNIST / "train.json"], tmp_path / "r2", npz_file=str(npz2), **{**TINY, **film})
    info = check_training_outputs(tmp_path / "r2", (28, 28))
    assert info["network"] == "monai_neurosql.networks.film_unet_generator.FiLMUNetGenerator"
    assert info["network_args"]["film_hidden"] == 12
    assert type(load_trained_generator(tmp_path / "r2")[0]).__name__ == "FiLMUNetGenerator"
    run_workflow([MEDMNIST / "inference.json"], tmp_path / "r2", workflow_type="infer", num_samples=3)
    check_inference_outputs(tmp_path / "r2", (28, 28), info["spacing"], 3)
    run_workflow([MEDMNIST / "evaluate.json"], tmp_path / "r2", workflow_type="eval", npz_file=str(npz2), num_samples=16,
                 encoder_epochs=1)
    assert json.loads((tmp_path / "r2" / "eval" / "metrics.json").read_text())["num_real"] == 8

    npz3 = write_npz(tmp_path / "tiny3d.npz", shape=(16, 16, 16), n=(12, 4, 4))
    run_workflow([MEDMNIST / "train.json", MEDMNIST / "train_3d.json"], tmp_path / "r3", npz_file=str(npz3),
                 **{**TINY, "spatial_size": 16, "channels": [8, 8], "batch_size": 4})
    info = check_training_outputs(tmp_path / "r3", (16, 16, 16))
    run_workflow([MEDMNIST / "inference.json"], tmp_path / "r3", workflow_type="infer", num_samples=2)
    check_inference_outputs(tmp_path / "r3", (16, 16, 16), info["spacing"], 2)


@pytest.mark.parametrize("bundle", ["neurosql_oasis", "neurosql_medmnist"])
def test_bundle_layout_and_metadata(bundle, recwarn):
    root = ROOT / "bundles" / bundle
    for name in ("metadata.json", "train.json", "inference.json", "evaluate.json", "export.json",
                 "multi_gpu_train.json", "logging.conf"):
        assert (root / "configs" / name).is_file()
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()
    large = [line for line in (root / "large_files.yml").read_text().splitlines() if not line.startswith("#")]
    assert large == ["large_files: []"]  # the model-zoo list of weight files: none are published
    # offline: verify_metadata downloads the schema only when --filepath is missing
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA))
    # MONAI 1.6 loads required_packages_version as written (a deprecated optional_packages_version would replace it)
    parser = ConfigParser()
    parser.read_meta(str(root / "configs" / "metadata.json"))
    required = set(parser["_meta_"]["required_packages_version"])
    assert not [w for w in recwarn if "deprecated name" in str(w.message)]
    tomllib = pytest.importorskip("tomllib", reason="tomllib (Python >= 3.11) reads pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[\s<>=\[]", r)[0] for r in project["dependencies"]} - {"torch", "numpy", "monai"}
    demo = {"nilearn"} if bundle == "neurosql_oasis" else set()
    assert required == core | {"monai-neurosql", "tensorboard"} | demo
    image = parser["_meta_"]["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 16 and image["spatial_shape"] == [] and image["format"] == "latent"


def test_the_offline_schema_refuses_what_monai_16_misreads(tmp_path):
    meta = json.loads((OASIS / "metadata.json").read_text())
    broken = {**meta, "optional_packages_version": {"nilearn": "0.14.1"}}
    (tmp_path / "meta.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="Failed validating"):
        verify_metadata(meta_file=str(tmp_path / "meta.json"), filepath=str(SCHEMA))
    nested = json.loads(json.dumps(meta))
    nested["network_data_format"]["inputs"] = {"latent": nested["network_data_format"]["inputs"]["image"]}
    (tmp_path / "meta.json").write_text(json.dumps(nested))
    with pytest.raises(ValueError, match="Failed validating"):
        verify_metadata(meta_file=str(tmp_path / "meta.json"), filepath=str(SCHEMA))


@pytest.mark.slow
def test_export_config_and_verify_net_in_out_on_a_trained_run(tmp_path, capsys):
    npz = write_npz(tmp_path / "tiny.npz", n=(16, 8, 8))
    run_workflow([MEDMNIST / "train.json"], tmp_path, npz_file=str(npz), **{**TINY, "num_epochs": 1,
                                                                           "latent_size": 16})
    capsys.readouterr()
    run_workflow([MEDMNIST / "inference.json", MEDMNIST / "export.json"], tmp_path, workflow_type="infer")
    assert "reproduces the generator on 4 seeded codes" in capsys.readouterr().out  # the bundles log to stdout
    program, extras = load_exported_generator(tmp_path / "models" / "model.pt2")
    generator, _, _ = load_trained_generator(tmp_path)
    z = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))  # another batch size than the export's
    with torch.no_grad():
        torch.testing.assert_close(program(z), generator(z), rtol=1e-5, atol=1e-6)
    assert set(extras["metadata.json"]["required_packages_version"]) >= {"monai-neurosql", "tensorboard", "lapx"}
    assert extras["data_info.json"]["shape"] == [1, 28, 28]
    verify_net_in_out(net_id="network_def", meta_file=str(MEDMNIST / "metadata.json"),
                      config_file=str(MEDMNIST / "inference.json"), bundle_root=str(tmp_path))
    with pytest.raises(ValueError, match="output channel number"):  # the check is real: 3 channels are refused
        verify_net_in_out(net_id="network_def", meta_file=str(MEDMNIST / "metadata.json"),
                          config_file=str(MEDMNIST / "inference.json"), bundle_root=str(tmp_path),
                          **{"_meta_#network_data_format#outputs#pred#num_channels": 3})


def test_missing_fashion_mnist_names_the_setting_and_the_fix(tmp_path):
    with pytest.raises(RuntimeError) as excinfo:
        run_workflow([MEDMNIST / "train.json"], tmp_path, fashion_mnist_dir=str(tmp_path / "nowhere"))
    message = str(user_error(excinfo.value))
    assert message.startswith("npz_file and medmnist_name are empty, so the data is Fashion-MNIST from "
                              "fashion_mnist_dir, but the Fashion-MNIST idx files")
    assert str(tmp_path / "nowhere") in message and "--fashion_mnist_dir" in message and "--npz_file" in message
    assert not list((tmp_path / "models").iterdir())  # stopped before anything was trained or written

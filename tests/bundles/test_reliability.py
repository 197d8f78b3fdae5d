"""Issue 10 through the bundles: exact resume, finished runs left alone, divergence stopped, RGB data, inference
that never mixes runs, and bad inputs refused in one line without an abort."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_neurosql.data import user_error
from monai_neurosql.handlers import TrainingDivergedError, ValidationAssignmentCost
from tests.bundles.test_bundles import MEDMNIST, OASIS, ROOT, TINY, run_workflow
from tests.data.test_inputs import _kaggle
from tests.data.test_medmnist import write_npz

COSTS = [0.50, 0.30, 0.40, 0.45, 0.42, 0.41]


class SimulatedKill(RuntimeError):
    pass


def _script_validation(monkeypatch, kill_at: int | None = None) -> None:
    """Validation costs 0.50, 0.30, 0.40, 0.45, 0.42, 0.41 by epoch; optionally die at the start of ``kill_at``'s
    validation (the epoch's training ran, its checkpoint was not written)."""

    def scripted(self, engine):
        if engine.state.epoch == kill_at:
            raise SimulatedKill(f"killed in epoch {kill_at}")
        engine.state.metrics[self.metric_name] = COSTS[engine.state.epoch - 1]

    monkeypatch.setattr(ValidationAssignmentCost, "__call__", scripted)


def _chain(error: BaseException) -> list[BaseException]:
    out = []
    while error is not None:
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def _epoch(path: Path) -> int:
    trainer = torch.load(path, weights_only=True)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def _train(root, npz, **overrides):
    return run_workflow([MEDMNIST / "train.json"], root, npz_file=str(npz),
                        **{**TINY, "num_epochs": 6, "patience": 2, **overrides})


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    npz = write_npz(tmp_path / "tiny.npz", n=(16, 8, 8))
    _script_validation(monkeypatch)
    _train(tmp_path / "a", npz)
    models_a = tmp_path / "a" / "models"
    assert _epoch(models_a / "model.pt") == 4 and _epoch(models_a / "best.pt") == 2  # patience 2 after 0.30

    _script_validation(monkeypatch, kill_at=4)
    with pytest.raises(RuntimeError) as excinfo:
        _train(tmp_path / "b", npz)
    assert any(isinstance(e, SimulatedKill) for e in _chain(excinfo.value))
    models_b = tmp_path / "b" / "models"
    assert _epoch(models_b / "model.pt") == 3

    _script_validation(monkeypatch)
    capsys.readouterr()
    _train(tmp_path / "b", npz)  # the bundles log to stdout (logging.conf)
    log = capsys.readouterr().out
    # the same stop epoch and the same best model (epoch 2, 0.30), not the resumed part's 0.41 of epoch 6
    assert _epoch(models_b / "model.pt") == 4 and _epoch(models_b / "best.pt") == 2
    best_a, best_b = (torch.load(m / "best.pt", weights_only=True)["generator"] for m in (models_a, models_b))
    last_a, last_b = (torch.load(m / "model.pt", weights_only=True) for m in (models_a, models_b))
    for key in best_a:
        torch.testing.assert_close(best_b[key], best_a[key], rtol=0, atol=0)
        torch.testing.assert_close(last_b["generator"][key], last_a["generator"][key], rtol=0, atol=0)
    torch.testing.assert_close(last_b["bank"]["codes"], last_a["bank"]["codes"], rtol=0, atol=0)
    assert last_b["early_stop"] == last_a["early_stop"] and last_b["guard"] == last_a["guard"]
    keys = ("epoch", "n", "cost", "moved")  # the history without its timings
    assert [[h[k] for k in keys] for h in last_b["assignment"]["history"]] == \
        [[h[k] for k in keys] for h in last_a["assignment"]["history"]]
    # the checkpoint is restored before the engine starts, so the engine reports the restored epoch
    restored, resumed = log.index("Restored all variables"), log.index("Engine run resuming from iteration")
    assert restored < resumed and log[resumed:].startswith("Engine run resuming from iteration 6, epoch 3 until 6 epochs")

    # re-running the finished run does nothing and says so; nothing it wrote is rewritten
    written = [models_b / "best.pt", models_b / "model.pt", models_b / "data_info.json",
               *sorted((tmp_path / "b" / "runs" / "samples").glob("*.png"))]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written}
    with pytest.raises(SystemExit) as stop:
        _train(tmp_path / "b", npz)
    assert stop.value.code == 0
    assert "already finished (stopped early at epoch 4; best model of epoch 2 (0.3000)); nothing to do" in \
        capsys.readouterr().out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written} == before


@pytest.mark.slow
def test_huge_learning_rate_fails_loudly_and_leaves_no_model_to_infer_from(tmp_path):
    npz = write_npz(tmp_path / "tiny.npz", n=(16, 8, 8))
    with pytest.raises(RuntimeError) as excinfo:  # before: exit code 0 and blank images
        _train(tmp_path, npz, learning_rate=1e3, num_epochs=3)
    error = user_error(excinfo.value)
    assert isinstance(error, TrainingDivergedError) and "Try a 10x lower learning_rate" in str(error)
    assert not (tmp_path / "models" / "best.pt").exists() and not (tmp_path / "models" / "model.pt").exists()
    with pytest.raises(RuntimeError) as excinfo:
        run_workflow([MEDMNIST / "inference.json"], tmp_path, workflow_type="infer", num_samples=2)
    assert "model.pt' not found; run the bundle's train.json first" in str(user_error(excinfo.value))


@pytest.mark.slow
def test_pathmnist_style_rgb_trains_and_generates_and_inference_never_mixes_runs(tmp_path, capsys):
    npz = write_npz(tmp_path / "pathmnist.npz", rgb=True, n=(16, 8, 8))  # (N, 28, 28, 3) uint8, MedMNIST keys
    run_workflow([MEDMNIST / "train.json"], tmp_path, npz_file=str(npz), **TINY)
    assert json.loads((tmp_path / "models" / "data_info.json").read_text())["shape"] == [3, 28, 28]
    capsys.readouterr()
    run_workflow([MEDMNIST / "inference.json"], tmp_path, workflow_type="infer", num_samples=4)
    outputs = tmp_path / "outputs"
    files = sorted(outputs.glob("synthetic_*.nii.gz"))
    assert len(files) == 4 and nib.load(str(files[0])).shape == (28, 28, 3)
    assert (outputs / "synthetic_grid.png").is_file()
    log = capsys.readouterr().out
    assert f"generating with the checkpoint {tmp_path / 'models' / 'model.pt'}" in log  # the last epoch
    assert "wrote 4 NIfTI files (synthetic_0000.nii.gz .. synthetic_0003.nii.gz)" in log

    # a second run into the same folder is refused; with overwrite=True the folder holds exactly the new run
    with pytest.raises(RuntimeError) as excinfo:
        run_workflow([MEDMNIST / "inference.json"], tmp_path, workflow_type="infer", num_samples=2)
    assert "already holds 6 outputs of an earlier run" in str(user_error(excinfo.value))
    run_workflow([MEDMNIST / "inference.json"], tmp_path, workflow_type="infer", num_samples=2, overwrite=True)
    assert sorted(p.name for p in outputs.iterdir()) == ["synthetic.csv", "synthetic_0000.nii.gz",
                                                        "synthetic_0001.nii.gz", "synthetic_grid.png"]
    with open(outputs / "synthetic.csv") as f:
        assert [row["file"] for row in csv.DictReader(f)] == ["synthetic_0000.nii.gz", "synthetic_0001.nii.gz"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bad_inputs_end_the_cli_run_with_one_line_and_no_abort(tmp_path):
    # a truncated JPEG aborted the process (exit 134, "terminate called without an active exception") from inside
    # CacheDataset's threads, its message buried under a generic RuntimeError
    root = _kaggle(tmp_path / "kaggle", per_class=(2, 2, 2, 2))
    bad = root / "Mild Dementia" / "OAS1_0005_MR1_mpr-1_100.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    done = _cli(["--config_file", str(OASIS / "train.json"), "--bundle_root", str(tmp_path / "run"), "--dataset_dir",
                 str(root), "--split_fractions", "[0.5, 0.25, 0.25]"], tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: 1 of 16 image files cannot be used: ") and bad.name in last
    assert "Re-export or re-download them" in last

    npz = write_npz(tmp_path / "labels.npz", n=(6, 3, 4), train_labels=np.full((6, 1), 7))
    done = _cli(["--config_file", str(MEDMNIST / "train.json"), "--bundle_root", str(tmp_path / "run2"),
                 "--npz_file", str(npz), "--num_classes", "7"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ERROR: {str(npz)!r}, key 'train_labels': label 7 is out of range for num_classes=7 (classes 0..6); set "
        "num_classes to 8 or fix the labels.")

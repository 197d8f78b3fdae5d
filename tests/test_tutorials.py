"""Tutorials run top to bottom in quick mode (``NEUROSQL_QUICK=1``), in a fresh working folder, and write what they
say they write.

Notebooks are executed with ``nbclient`` on a kernel of *this* interpreter: the test writes a kernel spec whose
command is ``sys.executable -m ipykernel_launcher`` into its temporary folder and hands nbclient a kernel manager
that looks only there. Nothing is installed or registered for the user, and the notebook runs with the packages
of the environment that runs pytest, whatever kernels (or none) the machine has registered.
"""

from __future__ import annotations

import json
import runpy
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("*.py"))
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _quick_env(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.setenv("NEUROSQL_QUICK", "1")
    monkeypatch.setenv("NEUROSQL_WORKDIR", str(workdir))
    # one thread per process: the tutorials' subprocesses (bundles, torchrun ranks) share 2 cores in CI, and
    # OpenMP threads spinning for a busy core slow a run down many times over
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_tutorial_runs(path, tmp_path, monkeypatch):
    _quick_env(monkeypatch, tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    assert (tmp_path / "real_top_synthetic_bottom.png").is_file()
    assert len(list((tmp_path / "synthetic").glob("*.nii.gz"))) == 16


# ---------------------------------------------------------------------------------------------------- notebooks
def _run_notebook(path: Path, workdir: Path, kernel_dir: Path) -> nbformat.NotebookNode:
    """Execute ``path`` top to bottom with a kernel of this interpreter, in ``workdir``; returns the notebook
    with its outputs (a failing cell raises ``nbclient.exceptions.CellExecutionError`` with its traceback)."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    write_kernel_spec(kernel_dir / "neurosql-test")  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    nb = nbformat.read(str(path), as_version=4)
    manager = KernelManager(kernel_name="neurosql-test", kernel_spec_manager=specs)
    start = time.perf_counter()
    client = NotebookClient(nb, km=manager, timeout=600, resources={"metadata": {"path": str(workdir)}})
    client.execute(cleanup_kc=True)  # shut the kernel down afterwards (nbclient keeps kernels it did not start)
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
    return nb


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    """Every output of ``nb`` of type ``kind`` (``"image/png"``, ``"error"``, ``"text"``)."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "text" and out.get("name") == "stdout":
                found.append(out["text"])
            elif kind == "error" and out.get("output_type") == "error":
                found.append(out)
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


def _check_01(work: Path, text: str) -> None:
    assert len(list((work / "synthetic").glob("synthetic_*.nii.gz"))) == 16
    assert (work / "synthetic" / "synthetic_grid.png").is_file()
    assert "C[3, 5] == loss(X_3, G(Q_5)): True" in text  # the cost matrix is the training loss, pair by pair
    assert "mean assigned cost, exact" in text


def _check_02(work: Path, text: str) -> None:
    import nibabel as nib
    import torch

    oasis = work / "oasis_run"
    split = json.loads((oasis / "runs" / "datalist.json").read_text())
    subjects = [{r["subject"] for r in split[name]} for name in ("training", "validation", "test")]
    assert all(subjects) and not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    # interrupted, resumed to the last epoch, then re-run as a no-op
    assert "resumed after epoch" in text and "nothing to do" in text and "exit code 0 ; files unchanged: True" in text
    state = torch.load(oasis / "models" / "model.pt", weights_only=True)["trainer"]
    assert state["iteration"] == state["max_epochs"] * state["epoch_length"]
    files = sorted((oasis / "outputs").glob("synthetic_*.nii.gz"))
    assert files and (oasis / "outputs" / "synthetic_grid.png").is_file()
    assert nib.load(str(files[0])).get_fdata().std() > 0
    # grey and RGB MedMNIST-layout files, through the bundle
    for name, shape in (("grey_run", [1, 28, 28]), ("rgb_run", [3, 28, 28])):
        info = json.loads((work / name / "models" / "data_info.json").read_text())
        assert info["shape"] == shape and (work / name / "models" / "best.pt").is_file()
    with np.load(work / "pathmnist_style.npz") as rgb:
        assert rgb["train_images"].ndim == 4 and rgb["train_images"].shape[-1] == 3
    assert "synthetic in this batch" in text  # the MixedDataset section drew a mixed batch


def _check_03(work: Path, text: str) -> None:
    import re

    assert "synthetic in this batch" in text  # the MixedDataset served real and synthetic items in one batch
    conditions = re.findall(r"^(real[a-z +]*?) +\((\s*\d+) items\): test accuracy ([\d.]+)", text, re.MULTILINE)
    names = ["real", "real + classical", "real + synthetic", "real + synthetic + classical"]
    assert [c[0] for c in conditions] == names
    assert int(conditions[2][1]) > int(conditions[0][1])  # the mix holds more items than the real set
    # the audit's controls: exact copies are always flagged; blurred copies are caught too, far above the floor
    rows = re.findall(r"^(\S[^|]*?) *\| +([\d.]+)% \|", text, re.MULTILINE)  # set | near-copy share | ...
    shares = {name: float(share) for name, share in rows}
    assert float(shares["control: copies of training images"]) == 100.0
    assert shares["control: blurred copies (sigma 1.5)"] > shares["control: unseen real images"] + 50
    assert len(list(work.glob("audit_*.png"))) == 4


def _check_04(work: Path, text: str) -> None:
    import nibabel as nib

    with np.load(work / "brain3d.npz") as data:
        assert data["train_images"].ndim == 4  # (N, D, H, W), MedMNIST3D layout
    info = json.loads((work / "run3d" / "models" / "data_info.json").read_text())
    assert info["spatial_dims"] == 3 and len(info["shape"]) == 4
    files = sorted((work / "run3d" / "outputs").glob("synthetic_*.nii.gz"))
    assert len(files) == 8 and nib.load(str(files[0])).shape == (16, 16, 16)


def _check_05(work: Path, text: str) -> None:
    assert "sparse certified: mean cost" in text and "sparse path: True, certified: True" in text
    assert "the codes moved from their random start: True" in text
    assert "both ranks hold identical codes: True" in text and "rank 0's checkpoint holds the same codes: True" in text
    assert len(list((work / "ddp_run" / "runs").glob("bank_rank*.pt"))) == 2


#: What each notebook must leave in its working folder and print. A new notebook needs an entry here.
CHECKS: dict[str, Callable[[Path, str], None]] = {
    "01_quickstart.ipynb": _check_01,
    "02_your_data.ipynb": _check_02,
    "03_augmentation.ipynb": _check_03,
    "04_3d.ipynb": _check_04,
    "05_scaling.ipynb": _check_05,
}
#: Notebooks that read Fashion-MNIST from the Debian package (skipped with the reason where it is missing).
NEEDS_FASHION_MNIST = {"03_augmentation.ipynb", "05_scaling.ipynb"}


def test_every_notebook_is_checked_and_committed_without_outputs():
    assert NOTEBOOKS, "no notebooks in tutorials/"
    assert sorted(p.name for p in NOTEBOOKS) == sorted(CHECKS), "add the new notebook's checks to CHECKS"
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        # outputs are not committed (small diffs, no stale pictures): clear them before committing
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        # a parameter cell first: quick mode for CI, sizes chosen from it
        assert 'os.environ.get("NEUROSQL_QUICK") == "1"' in code[0].source, path.name
        assert nb.cells[0].cell_type == "markdown" and "Time" in nb.cells[0].source, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    if path.name in NEEDS_FASHION_MNIST and not FASHION_MNIST.is_dir():
        pytest.skip(f"{path.name} reads Fashion-MNIST from {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    work = tmp_path / "work"
    _quick_env(monkeypatch, work)
    # the kernel's connection file and IPython profile go to the temporary folder too, not to the user's home
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = _run_notebook(path, tmp_path, tmp_path / "kernels")
    assert not _outputs(nb, "error")
    assert _outputs(nb, "image/png"), f"{path.name} showed no picture"
    CHECKS[path.name](work, "".join(_outputs(nb, "text")))

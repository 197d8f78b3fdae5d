"""Every command of README.md and of both bundles' docs/README.md runs as written, from a clean copy of the
repository, with small overrides for time; the outputs are checked, and stay inside each command's bundle root.

The commands are parsed from the ```bash blocks of the markdown files, so the docs cannot drift from what runs
here. ``python -m monai.bundle ...`` commands run in this process through MONAI's own entry point (``runpy`` of
``monai.bundle.__main__`` with the command's arguments: the same ``fire`` parsing as the shell, without paying the
imports again); ``torchrun`` commands run as processes. Commands of other kinds are skipped only when listed in
``SKIPPED`` with the reason; any other command fails the test, so a new documented command must be taught here.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest
import torch

from monai_neurosql.data import load_trained_generator
from monai_neurosql.export import load_exported_generator
from tests.bundles.test_bundles import ROOT, write_oasis1
from tests.data.test_inputs import _kaggle
from tests.data.test_medmnist import write_npz

DOCS = ["README.md", "bundles/neurosql_oasis/docs/README.md", "bundles/neurosql_medmnist/docs/README.md"]

#: command prefixes that are not run here, and why
SKIPPED = {
    "pip install": "installs packages: the test runs in the installed environment",
    "python -m pytest": "the test suite itself (.ci/run runs it)",
    "python -m monai_neurosql.benchmark": "parsed, and README.md's run on tiny settings, in "
                                          "tests/test_documented_benchmark_commands.py",
}

#: small overrides for time, by config; data placeholders of the docs point at tiny data in the same layouts
TRAIN = {
    "neurosql_oasis": {"num_epochs": "1", "spatial_size": "32", "channels": "[16, 8, 8]", "batch_size": "64",
                       "val_max_images": "16", "split_fractions": "[0.5, 0.25, 0.25]"},
    "neurosql_medmnist": {"num_epochs": "1", "max_train": "48", "channels": "[16, 8, 8]", "val_max_images": "16"},
}
TRAIN_3D = {"spatial_size": "16", "channels": "[8, 8]", "batch_size": "4", "max_train": "8"}
EVALUATE = {"num_samples": "32", "max_test": "64", "encoder_epochs": "1"}


def documented_commands(markdown: Path) -> list[str]:
    """The shell commands of the ```bash blocks of ``markdown``: continuation lines joined, comments dropped,
    ``a && b`` split into ``a`` and ``b``."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line and not line.startswith("#"):
                commands.extend(part.strip() for part in line.split(" && "))
    return commands


def _skip_reason(command: str) -> str | None:
    return next((reason for prefix, reason in SKIPPED.items() if command.startswith(prefix)), None)


def _option(argv: list[str], key: str) -> str | None:
    flag = f"--{key}"
    return argv[argv.index(flag) + 1] if flag in argv else None


def _set_option(argv: list[str], key: str, value: str) -> None:
    flag = f"--{key}"
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv.extend([flag, value])


def _configs(argv: list[str]) -> list[str]:
    value = _option(argv, "config_file") or ""
    return [str(c) for c in (ast.literal_eval(value) if value.startswith("[") else [value])]


def _with_overrides(argv: list[str], data: dict[str, str]) -> list[str]:
    argv = [data.get(token, token) for token in argv]
    configs = [Path(c).name for c in _configs(argv)]
    bundle = next((b for b in TRAIN if any(b in c for c in _configs(argv))), None)
    if "train.json" in configs:
        overrides = dict(TRAIN[bundle])
        if "train_3d.json" in configs:
            overrides.update(TRAIN_3D)
        if bundle == "neurosql_medmnist" and not _option(argv, "npz_file") and not _option(argv, "medmnist_name"):
            overrides["fashion_mnist_dir"] = data["fashion_mnist_dir"]
        if bundle == "neurosql_oasis" and _option(argv, "csv_path"):
            overrides["split_fractions"] = "[0.7, 0.15, 0.15]"
        for key, value in overrides.items():
            _set_option(argv, key, value)
    elif "evaluate.json" in configs:
        for key, value in EVALUATE.items():
            _set_option(argv, key, value)
    return argv


def _monai_bundle(argv: list[str]) -> None:
    """``python -m monai.bundle <argv>`` in this process; a run that ends with exit code 0 (a finished training
    run re-run) counts as done."""
    saved = sys.argv
    sys.argv = ["monai.bundle", *argv]
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=False)
    except SystemExit as stop:
        assert stop.code in (0, None), f"exit code {stop.code}"
    finally:
        sys.argv = saved


def _torchrun(argv: list[str], cwd: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--master_port={port}", *argv[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]


def _check_training(root: Path) -> None:
    models = root / "models"
    assert {"model.pt", "best.pt", "data_info.json"} <= {p.name for p in models.iterdir()}
    assert (root / "runs" / "datalist.json").is_file() and any((root / "runs" / "tensorboard").iterdir())
    trainer = torch.load(models / "model.pt", weights_only=True)["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"] * 1  # the one epoch of the override


def _check_inference(root: Path, argv: list[str]) -> None:
    out = Path(_option(argv, "output_dir") or root / "outputs")
    files = sorted(out.glob("synthetic_*.nii.gz"))
    assert len(files) == int(_option(argv, "num_samples") or 16)
    assert (out / "synthetic_grid.png").is_file() and (out / "synthetic.csv").is_file()
    assert nib.load(str(files[0])).get_fdata().std() > 0
    label = _option(argv, "label")
    rows = (out / "synthetic.csv").read_text().splitlines()[1:]
    assert {row.split(",")[1] for row in rows} == {label or ""}


def _check_export(root: Path) -> None:
    program, extras = load_exported_generator(root / "models" / "model.pt2")
    generator, _, info = load_trained_generator(root)  # models/model.pt, as the export config loads it
    z = torch.randn(5, info["latent_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(program(z), generator(z), rtol=1e-5, atol=1e-6)
    assert extras["data_info.json"]["latent_size"] == info["latent_size"]
    required = extras["metadata.json"]["required_packages_version"]
    assert {"monai-neurosql", "pytorch-ignite", "tensorboard"} <= set(required)
    assert "optional_packages_version" not in extras["metadata.json"]


def run_documented(command: str, cwd: Path, data: dict[str, str], demo: dict) -> Path | None:
    """Run one documented command in ``cwd`` and check what it wrote; returns its bundle root (or ``None``)."""
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        argv = _with_overrides(argv, data)
        root = cwd / _option(argv, "bundle_root")
        _seed_demo(argv, root, demo)
        _torchrun(argv, cwd)
        _check_training(root)
        return root
    assert argv[:3] == ["python", "-m", "monai.bundle"], f"no runner for the documented command {command!r}"
    argv = _with_overrides(argv[3:], data)
    root = cwd / _option(argv, "bundle_root") if _option(argv, "bundle_root") else None
    configs = [Path(c).name for c in _configs(argv)]
    if root is not None:
        _seed_demo(argv, root, demo)
    _monai_bundle(argv)
    if argv[0] == "run" and "train.json" in configs:
        _check_training(root)
        if (root / "demo_data").is_dir():
            demo.setdefault("path", root / "demo_data")
    elif argv[0] == "run" and "export.json" in configs:
        _check_export(root)
    elif argv[0] == "run" and "inference.json" in configs:
        _check_inference(root, argv)
    elif argv[0] == "run" and "evaluate.json" in configs:
        metrics = (root / "eval" / "metrics.json").read_text()
        assert all(key in metrics for key in ("proxy_fid", "kid", "precision", "recall", "near_copy_share", "controls"))
    else:
        assert argv[0] in ("verify_metadata", "verify_net_in_out"), f"no check for {command!r}"
    return root


def _seed_demo(argv: list[str], root: Path, demo: dict) -> None:
    """The demo data is built once (by the first command that trains on it) and copied into later bundle roots:
    building it again is the same code path and 20 s more."""
    uses_demo = any("neurosql_oasis" in c and c.endswith("train.json") for c in _configs(argv))
    if uses_demo and not _option(argv, "dataset_dir") and "path" in demo and not (root / "demo_data").exists():
        shutil.copytree(demo["path"], root / "demo_data")


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    """The repository's tracked files (plus the docs and configs of this working tree) in a fresh folder, under
    git there, so that what the commands write can be checked against .gitignore."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git and a git checkout are needed to copy the tracked files and to check .gitignore")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    copy = tmp_path_factory.mktemp("checkout")
    for name in listed:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clean copy"]):
        subprocess.run([*git, *args], cwd=copy, check=True, capture_output=True)
    return copy


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    """Tiny data in each layout the docs name, keyed by the docs' placeholder paths."""
    base = tmp_path_factory.mktemp("data")
    volumes, csv = write_oasis1(base / "oasis1", base / "oasis_cross-sectional.csv")
    fashion = base / "fashion-mnist"
    write_fashion_mnist_idx(fashion)
    return {
        "/data/oasis": str(_kaggle(base / "kaggle", per_class=(4, 3, 3, 3))),
        "/data/oasis1": str(volumes),
        "/data/oasis_cross-sectional.csv": str(csv),
        "pathmnist.npz": str(write_npz(base / "pathmnist.npz", rgb=True, n=(24, 8, 8),
                                       train_labels=torch.arange(24).remainder(9)[:, None].numpy())),
        "organmnist3d.npz": str(write_npz(base / "organmnist3d.npz", shape=(16, 16, 16), n=(8, 4, 4))),
        "fashion_mnist_dir": str(fashion),
    }


def write_fashion_mnist_idx(folder: Path, n_train: int = 5064, n_test: int = 64) -> Path:
    """Four gzipped idx files in the Fashion-MNIST layout (random 28x28 uint8 images, labels 0-9)."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                            ("labels-idx1", rng.integers(0, 10, n, dtype=np.uint8))):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return folder


def test_documented_commands_parse_and_name_real_files():
    commands = [c for doc in DOCS for c in documented_commands(ROOT / doc)]
    run = [c for c in commands if _skip_reason(c) is None]
    assert len(run) >= 20
    for command in run:
        argv = shlex.split(command)
        assert argv[0] == "torchrun" or argv[:3] == ["python", "-m", "monai.bundle"], command
        for config in _configs(argv):
            assert not config or (ROOT / config).is_file(), f"{command}: {config} is not in the repository"
        if "run" in argv:
            # from the repository root, into a folder the repository ignores
            assert re.fullmatch(r"(outputs|runs)/\w+", _option(argv, "bundle_root") or ""), command
            assert all(c.startswith("bundles/") for c in _configs(argv)), command
    for name in ("train.json", "inference.json", "evaluate.json", "export.json", "multi_gpu_train.json"):
        for bundle in ("neurosql_oasis", "neurosql_medmnist"):
            assert any(f"bundles/{bundle}/configs/{name}" in c for c in run), f"no documented command uses {name}"
    verbs = {shlex.split(c)[3] for c in run if c.startswith("python -m monai.bundle")}
    assert verbs == {"run", "verify_metadata", "verify_net_in_out"}


@pytest.fixture
def one_thread():
    """One torch thread for the in-process runs: the tiny images gain nothing from two, and on a busy machine
    OpenMP's waiting threads made each image transform 20x slower (measured: 0.29 s against 0.014 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_documented_command_runs_from_a_clean_copy(clean_copy, tiny_data, monkeypatch, one_thread):
    monkeypatch.chdir(clean_copy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the torchrun processes
    done, roots, demo, skipped = set(), set(), {}, []
    for doc in DOCS:
        for command in documented_commands(clean_copy / doc):
            reason = _skip_reason(command)
            if reason is not None:
                skipped.append(command.split()[:3])
                continue
            if command in done:  # the same command in two documents: the second run would be a no-op
                continue
            start = time.perf_counter()
            root = run_documented(command, clean_copy, tiny_data, demo)
            print(f"{time.perf_counter() - start:6.1f} s  {command}")  # shown with -s or on failure
            done.add(command)
            if root is not None:
                roots.add(root.resolve())
    assert len(done) >= 20 and skipped
    # every file the commands wrote lies in a bundle root, and git ignores it
    tracked = set(subprocess.run(["git", "ls-files"], cwd=clean_copy, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    written = [str(p.relative_to(clean_copy)) for p in clean_copy.rglob("*") if p.is_file()
               and ".git" not in p.relative_to(clean_copy).parts and "__pycache__" not in p.parts]
    written = [name for name in written if name not in tracked]
    stray = [name for name in written if not any((clean_copy / name).resolve().is_relative_to(r) for r in roots)]
    assert written and not stray, f"written outside the bundle roots: {stray}"
    ignored = subprocess.run(["git", "check-ignore", "--stdin"], cwd=clean_copy, input="\n".join(written),
                             capture_output=True, text=True, check=False).stdout.splitlines()
    assert sorted(set(written) - set(ignored)) == [], "written files that git does not ignore"

"""The install extras mean what they say: every import is declared, optional parts are imported only where used
and name their extra when missing, ``[all]`` holds every extra."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monai_neurosql.extras import require

tomllib = pytest.importorskip("tomllib", reason="tomllib (Python >= 3.11) reads pyproject.toml")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monai_neurosql"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: optional parts: imported only where used (monai_neurosql.extras.require), never by ``import monai_neurosql...``
OPTIONAL = {"lpips", "nilearn", "einops", "medmnist", "tensorboard", "onnx", "onnxscript"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _extras() -> dict[str, set[str]]:
    """Each extra's packages, self-references (``monai-neurosql[a,b]``) expanded."""
    raw = PROJECT["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        names = set()
        for requirement in raw[extra]:
            if _name(requirement) == PROJECT["name"]:
                for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                    names |= expand(inner.strip())
            else:
                names.add(_name(requirement))
        return names

    return {extra: expand(extra) for extra in raw}


def _distribution(module: str) -> str:
    found = importlib.metadata.packages_distributions().get(module)
    if not found:
        pytest.fail(f"module {module!r} is imported but no installed distribution provides it")
    return found[0].lower().replace("_", "-")


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party modules imported anywhere in the package, with the files that import them."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "monai_neurosql":
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def _require_calls() -> list[tuple[str, str, str | None, str]]:
    """``(module, extra, package, file)`` of every ``require(...)`` call in the package and the bundle configs."""
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require":
                args = [a.value for a in node.args if isinstance(a, ast.Constant)]
                package = next((k.value.value for k in node.keywords if k.arg == "package"), None)
                calls.append((args[0], args[1], package, str(path.relative_to(ROOT))))
    for path in sorted((ROOT / "bundles").glob("*/configs/*.json")):
        for match in re.finditer(r"require\('([\w.]+)', '(\w+)', '[^']*'(?:, package='(\w+)')?\)", path.read_text()):
            calls.append((*match.groups(), str(path.relative_to(ROOT))))
    return calls


def test_every_import_is_declared_and_optional_ones_only_in_extras():
    core = {_name(r) for r in PROJECT["dependencies"]}
    extras = _extras()
    declared = core.union(*extras.values())
    for module, files in sorted(_third_party_imports().items()):
        dist = _distribution(module)
        assert dist in declared, f"{module} ({dist}), imported in {files}, is not in pyproject.toml"
        if module in OPTIONAL:
            assert dist not in core, f"{dist} is optional (imported only where used) but a core dependency"
    assert not core & {_distribution(m) for m in OPTIONAL if importlib.util.find_spec(m)}


def test_each_require_names_an_extra_that_installs_the_package():
    extras = _extras()
    calls = _require_calls()
    assert {c[0].split(".")[0] for c in calls} >= {"lpips", "nilearn", "einops", "medmnist", "torch"}
    for module, extra, package, where in calls:
        assert extra in extras, f"{where}: require({module!r}) names the extra {extra!r}, which pyproject lacks"
        assert (package or module.split(".")[0]).lower() in extras[extra], f"{where}: [{extra}] lacks {module}"


def test_all_holds_every_extra_and_test_holds_what_the_suite_uses():
    extras = _extras()
    assert extras["all"] == set().union(*(names for extra, names in extras.items() if extra != "all"))
    assert {"pytest", "hypothesis", "ruff", "nbclient", "nbformat", "ipykernel", "tensorboard", "nilearn", "lpips",
            "einops", "jsonschema"} <= extras["test"]
    assert "ruff==0.17.6" in PROJECT["optional-dependencies"]["test"]


SLIM_INSTALL = """
import importlib.abc, importlib.util, sys
BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # importing a blocked package fails as if it were not installed (its spec has no origin)

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name.split(".")[0] in BLOCKED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r}", name=module.__name__)

sys.meta_path.insert(0, NotInstalled())
for name in BLOCKED:
    try:
        __import__(name)
        raise SystemExit(f"{name} was not blocked")
    except ModuleNotFoundError:
        pass
import torch
import monai_neurosql, monai_neurosql.networks, monai_neurosql.engines, monai_neurosql.handlers, monai_neurosql.data
import monai_neurosql.metrics, monai_neurosql.baselines, monai_neurosql.export, monai_neurosql.synthetic
from monai_neurosql import LatentBank, SSIML1Loss
from monai_neurosql.data import assignment_loader, train_loader
from monai_neurosql.engines import NeuroSQLTrainer
from monai_neurosql.handlers import QuantileAssignmentHandler
from monai_neurosql.networks import ConvGenerator
from monai.data import Dataset

data = Dataset([{"image": torch.rand(1, 16, 16), "index": i} for i in range(8)])
net = ConvGenerator(2, 3, spatial_size=16, channels=(8, 8))
trainer = NeuroSQLTrainer("cpu", 2, train_loader(data, 4, seed=0), net, LatentBank.create(8, 3, seed=0),
                          torch.optim.Adam(net.parameters()), loss_function=SSIML1Loss(2),
                          train_handlers=[QuantileAssignmentHandler(assignment_loader(data), every_n_epochs=1)])
trainer.run()
print("trained without", sorted(BLOCKED & set(sys.modules)) or "them", flush=True)
"""


def test_a_slim_install_imports_and_trains_without_the_optional_parts():
    # MONAI itself imports einops, lpips and tensorboard when they are installed, so their absence is simulated
    blocked = ",".join(sorted(OPTIONAL))
    done = subprocess.run([sys.executable, "-c", SLIM_INSTALL, blocked], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "trained without them"


def test_a_missing_optional_part_names_its_extra(monkeypatch, tmp_path):
    from monai_neurosql.baselines import matched_diffusion_unet
    from monai_neurosql.data import build_oasis_demo, download_medmnist
    from monai_neurosql.metrics import LPIPSMetric

    for module in ("lpips", "nilearn", "nilearn.datasets", "einops", "medmnist"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    cases = [(LPIPSMetric, "lpips"), (lambda: build_oasis_demo(tmp_path / "demo"), "bundles"),
             (lambda: matched_diffusion_unet(2, 1, 10_000), "ddpm"),
             (lambda: download_medmnist("pathmnist"), "medmnist")]
    for call, extra in cases:
        with pytest.raises(ImportError, match=re.escape(f'pip install "monai-neurosql[{extra}]"')):
            call()
    with pytest.raises(ImportError, match=r"TensorBoard logging needs the 'tensorboard' package.*\[bundles\]"):
        monkeypatch.setitem(sys.modules, "tensorboard", None)
        monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
        require("torch.utils.tensorboard", "bundles", "TensorBoard logging", package="tensorboard")

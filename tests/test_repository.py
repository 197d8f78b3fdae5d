"""The repository keeps its promises: README's commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = 'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[test]" && python -m pytest -q'


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme
    assert re.search(r"^" + re.escape(TEST_COMMAND) + r"$", ci, flags=re.MULTILINE)


MAIN_COMMAND = (
    'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[all]" && python -m monai.bundle run '
    "--config_file bundles/neurosql_oasis/configs/train.json --bundle_root outputs/oasis_demo && python -m "
    "monai.bundle run --config_file bundles/neurosql_oasis/configs/inference.json --bundle_root outputs/oasis_demo"
)


def test_readme_main_command_names_real_files():
    readme = (ROOT / "README.md").read_text()
    assert MAIN_COMMAND in readme
    for path in re.findall(r"bundles/[\w/.]+\.json", readme):
        assert (ROOT / path).is_file(), path


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README example must run as written


def test_ruff_check_is_clean():
    """``ruff check`` with the project's configuration (pyproject.toml) finds nothing: CI runs it through this test."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

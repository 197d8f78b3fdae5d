"""Tutorials run top to bottom (in quick mode)."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROSQL_QUICK", "1")
    monkeypatch.setenv("NEUROSQL_WORKDIR", str(tmp_path))
    runpy.run_path(str(path), run_name="__main__")
    assert (tmp_path / "real_top_synthetic_bottom.png").is_file()
    assert len(list((tmp_path / "synthetic").glob("*.nii.gz"))) == 16

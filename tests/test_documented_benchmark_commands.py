"""The benchmark commands the docs show parse as written, and README.md's run end to end on tiny settings.

Every ``python -m monai_neurosql.benchmark[.<tool>]`` command of the docs is parsed by its own module's parser
(a misspelt or removed option fails here, not for a user hours into a run). README.md's commands then run with
the options that set their size replaced by tiny values and the data set by a tiny labelled ``.npz`` (the data
loaders have their own tests in tests/test_benchmark.py); the models, variants and protocol stay as written.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import shlex
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from monai_neurosql.benchmark.cli import with_options
from tests.bundles.test_documented_commands import documented_commands
from tests.data.test_medmnist import write_npz

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/benchmarks.md", "docs/results/README.md", "bundles/neurosql_oasis/docs/README.md",
        "bundles/neurosql_medmnist/docs/README.md"]
PREFIX = ["python", "-m", "monai_neurosql.benchmark"]

#: size options replaced in the end-to-end runs (lists keep their first value)
TINY = {
    "monai_neurosql.benchmark": {"--epochs": "1", "--max-train": "48", "--num-samples": "60", "--audit-samples": "60",
                                 "--batch-size": "16", "--threads": "1", "--encoder-epochs": "1", "--vae-betas": "0.005",
                                 "--ddpm-timesteps": "10", "--ddpm-sampling-steps": "2", "--val-samples": "20"},
    "monai_neurosql.benchmark.augmentation": {"--per-class": "4", "--gen-steps": "2", "--clf-steps": "2",
                                              "--synthetic-per-class": "2", "--max-test": "30", "--pool": "48",
                                              "--latent-size": "2", "--threads": "1"},
}
FIRST_ONLY = ("--seeds", "--latent-sizes")


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


def benchmark_commands(doc: str) -> list[list[str]]:
    commands = [shlex.split(c, comments=True) for c in documented_commands(ROOT / doc)]
    return [argv for argv in commands if argv[:2] == PREFIX[:2] and argv[2:3] and argv[2].startswith(PREFIX[2])]


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` (``python -m <module> ...``) parsed by the module's own parser, without running anything."""
    module = importlib.import_module(argv[2] if argv[2] != PREFIX[2] else "monai_neurosql.benchmark.cli")
    original = argparse.ArgumentParser.parse_args

    def stop_after_parsing(parser, args=None, namespace=None):
        raise _Parsed(original(parser, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop_after_parsing), pytest.raises(_Parsed) as got:
        module.main(argv[3:])
    return got.value.namespace


def test_every_documented_benchmark_command_parses():
    commands = [argv for doc in DOCS for argv in benchmark_commands(doc)]
    assert len(commands) >= 8
    for argv in commands:
        args = parse(argv)
        written_to = getattr(args, "output", None) or args.npz  # into a folder the repository ignores
        assert str(written_to).startswith("runs/"), argv


def _tiny(argv: list[str], dataset: str, output: Path) -> list[str]:
    return with_options(argv[3:], {**TINY[argv[2]], "--dataset": dataset, "--output": str(output)}, FIRST_ONLY)


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_readme_benchmark_commands_run_on_tiny_settings(tmp_path):
    commands = benchmark_commands("README.md")
    assert [argv[2] for argv in commands] == ["monai_neurosql.benchmark", "monai_neurosql.benchmark.augmentation"]
    labels = np.arange(48).reshape(-1, 1) % 3
    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(48, 40, 60), train_labels=labels,
                    val_labels=np.arange(40).reshape(-1, 1) % 3, test_labels=np.arange(60).reshape(-1, 1) % 3)
    for k, argv in enumerate(commands):
        output = tmp_path / f"out{k}"
        written = importlib.import_module(argv[2]).main(_tiny(argv, str(npz), output))
        models = set(parse(argv).models)
        if argv[2] == "monai_neurosql.benchmark":
            assert {r["model"] for r in _rows(output / "results.csv")} == models
            assert (output / "results.md").is_file() and (output / "controls.csv").is_file()
        else:
            conditions = {r["condition"] for r in _rows(output / "augmentation.csv")}
            assert conditions == {"real", "real+classical"} | {f"real+{m}" for m in models}
            assert written and (output / "augmentation.md").is_file()

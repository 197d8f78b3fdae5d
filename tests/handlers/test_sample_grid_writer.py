from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from monai_neurosql import generate
from monai_neurosql.handlers import SampleGridWriter
from monai_neurosql.visualize import make_grid
from tests.handlers.tiny_trainer import make_tiny


@pytest.fixture
def tiny():
    return make_tiny()


class _Writer:
    def __init__(self):
        self.calls = []

    def add_image(self, tag, array, step, dataformats):
        self.calls.append((tag, array, step, dataformats))


def test_grids_at_every_n_epochs_and_at_the_end(tiny, tmp_path, caplog):
    writer = _Writer()
    handler = SampleGridWriter(tmp_path / "grids", num_samples=4, every_n_epochs=2, seed=1, summary_writer=writer,
                               scale=3)
    engine = tiny.engine()
    handler.attach(engine)
    handler.attach(engine)  # attaching twice registers once
    with caplog.at_level(logging.INFO):
        engine.run(range(1), max_epochs=5)
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == [
        "samples_epoch0002.png", "samples_epoch0004.png", "samples_epoch0005.png"]
    expected = make_grid(generate(tiny.net, 4, tiny.bank.lattice, seed=1))  # the same codes every time
    png = np.asarray(Image.open(tmp_path / "grids" / "samples_epoch0005.png"))
    np.testing.assert_array_equal(png, expected.repeat(3, 0).repeat(3, 1))
    assert [(tag, step, fmt) for tag, _, step, fmt in writer.calls] == [("samples", 2, "HW"), ("samples", 4, "HW"),
                                                                       ("samples", 5, "HW")]
    np.testing.assert_array_equal(writer.calls[-1][1], expected)
    assert handler.last_path == tmp_path / "grids" / "samples_epoch0005.png"
    assert any("sample grid written" in r.message for r in caplog.records)


def test_last_epoch_on_the_schedule_is_written_once(tiny, tmp_path):
    writer = _Writer()
    engine = tiny.engine()
    SampleGridWriter(tmp_path, num_samples=2, every_n_epochs=2, summary_writer=writer).attach(engine)
    engine.run(range(1), max_epochs=2)
    assert [step for _, _, step, _ in writer.calls] == [2]


def test_conditional_grid_has_one_row_per_class(tmp_path):
    tiny = make_tiny(n=12, conditional=True)
    engine = tiny.engine()
    SampleGridWriter(tmp_path, num_samples=5, every_n_epochs=1, scale=1).attach(engine)
    engine.run(range(1), max_epochs=1)
    labels = torch.tensor([0, 0, 1, 1, 0])  # two per class, the remainder filled with class 0
    expected = make_grid(generate(tiny.net, 5, tiny.bank.lattice, seed=0, labels=labels), nrow=2)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "samples_epoch0001.png")), expected)
    assert expected.shape == (3 * 18 + 2, 2 * 18 + 2)  # 3 rows (class 0, class 1, remainder) of 2 tiles


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="every_n_epochs"):
        SampleGridWriter(tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match="num_samples"):
        SampleGridWriter(tmp_path, num_samples=0)

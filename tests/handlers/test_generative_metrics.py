from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events

from monai_neurosql import generate
from monai_neurosql.handlers import GenerativeMetricsHandler
from tests.handlers.tiny_trainer import make_tiny


@pytest.fixture
def tiny():
    return make_tiny()


def test_metrics_of_seeded_samples_every_n_epochs(tiny, caplog):
    seen = []

    def mean_gap(real, fake):
        seen.append(fake)
        return (real.mean() - fake.mean()).abs().item()

    handler = GenerativeMetricsHandler(tiny.images, {"gap": mean_gap, "count": lambda r, f: len(f)}, num_samples=6,
                                       every_n_epochs=2, seed=5)
    engine = tiny.engine()
    handler.attach(engine)
    handler.attach(engine)  # attaching twice registers once
    values = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: values.append(dict(e.state.metrics)))
    with caplog.at_level(logging.INFO):
        engine.run(range(1), max_epochs=4)
    expected = generate(tiny.net, 6, tiny.bank.lattice, seed=5)
    assert len(seen) == 2 and all(torch.equal(f, expected) for f in seen)
    assert values[0] == {} and values[1]["count"] == 6.0
    assert values[1]["gap"] == pytest.approx((tiny.images.mean() - expected.mean()).abs().item())
    assert any("gap" in r.message and "count 6.0000" in r.message for r in caplog.records)


def test_custom_sampler(tiny):
    calls = []

    def sampler(engine, num, seed):
        calls.append((num, seed))
        return torch.zeros(num, 1, 16, 16)

    handler = GenerativeMetricsHandler(tiny.images, {"fake_mean": lambda r, f: f.mean()}, num_samples=3,
                                       every_n_epochs=1, seed=2, sampler=sampler)
    engine = tiny.engine()
    handler.attach(engine)
    engine.run(range(1), max_epochs=2)
    assert calls == [(3, 2), (3, 2)] and engine.state.metrics["fake_mean"] == 0.0


def test_errors(tiny):
    with pytest.raises(ValueError, match="at least one metric"):
        GenerativeMetricsHandler(tiny.images, {})
    with pytest.raises(ValueError, match="num_samples"):
        GenerativeMetricsHandler(tiny.images, {"m": lambda r, f: 0.0}, num_samples=1)
    with pytest.raises(ValueError, match="every_n_epochs"):
        GenerativeMetricsHandler(tiny.images, {"m": lambda r, f: 0.0}, every_n_epochs=0)

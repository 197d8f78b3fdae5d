from __future__ import annotations

import copy
import io
import logging

import pytest
import torch
from monai.data import Dataset
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from scipy.optimize import linear_sum_assignment

from monai_neurosql import AssignmentSettings, SSIML1Loss, pairwise_cost
from monai_neurosql.data import assignment_loader
from monai_neurosql.engines import AssignmentEvents
from monai_neurosql.generate import decode
from monai_neurosql.handlers import QuantileAssignmentHandler
from tests.handlers.tiny_trainer import TRAIN_LOSS, make_tiny


@pytest.fixture
def tiny():
    return make_tiny()


def _handler(tiny, **kw):
    return QuantileAssignmentHandler(assignment_loader(tiny.dataset()), **kw)


def _optimum(images, outputs, loss):
    cost = pairwise_cost(images, outputs, loss=loss).double().numpy()
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols].mean(), cols.tolist()


def test_full_assignment_minimizes_the_trainers_loss(tiny):
    """With rho = 1 the codes are exactly the optimal assignment under the trainer's SSIM window (7, not 11)."""
    handler = _handler(tiny, every_n_epochs=1, settings={"momentum": 1.0})
    tiny.trainer(epochs=1, handlers=[handler]).run()
    outputs = decode(tiny.net, tiny.bank.lattice_points)
    cost7, cols7 = _optimum(tiny.images, outputs, SSIML1Loss(2, **TRAIN_LOSS))
    cost11, _ = _optimum(tiny.images, outputs, SSIML1Loss(2))
    assert abs(cost7 - cost11) > 1e-3  # the two windows give clearly different costs
    assert handler.history[-1]["cost"] == pytest.approx(cost7, abs=1e-6)
    assert tiny.bank.assignment.tolist() == cols7
    torch.testing.assert_close(tiny.bank.codes, tiny.bank.lattice_points[tiny.bank.assignment])


def test_a_loss_in_the_settings_overrides_the_trainers(tiny):
    handler = _handler(tiny, every_n_epochs=1, settings=AssignmentSettings(momentum=1.0, loss=SSIML1Loss(2)))
    tiny.trainer(epochs=1, handlers=[handler]).run()
    cost11, cols11 = _optimum(tiny.images, decode(tiny.net, tiny.bank.lattice_points), SSIML1Loss(2))
    assert handler.history[-1]["cost"] == pytest.approx(cost11, abs=1e-6)
    assert tiny.bank.assignment.tolist() == cols11


def test_schedule_events_logging_and_state(tiny, caplog):
    handler = _handler(tiny, every_n_epochs=2)
    trainer = tiny.trainer(epochs=4, handlers=[handler])
    handler.attach(trainer)  # attaching twice registers once
    fired = []
    trainer.add_event_handler(AssignmentEvents.ASSIGNMENT_STARTED, lambda e: fired.append(("start", e.state.epoch)))
    trainer.add_event_handler(AssignmentEvents.ASSIGNMENT_COMPLETED, lambda e: fired.append(("done", e.state.epoch)))
    with caplog.at_level(logging.INFO):
        trainer.run()
    assert fired == [("start", 2), ("done", 2), ("start", 4), ("done", 4)]
    assert [h["epoch"] for h in handler.history] == [2.0, 4.0]
    assert any("quantile assignment (hungarian, n=24)" in r.message for r in caplog.records)
    stats = trainer.state.assignment
    assert {"cost", "moved", "n", "seconds", "decode_seconds", "cost_seconds", "solve_seconds"} <= set(stats)
    assert trainer.state.metrics["assignment_cost"] == stats["cost"]
    buffer = io.BytesIO()
    torch.save(handler.state_dict(), buffer)
    buffer.seek(0)
    other = _handler(tiny)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert other.history == handler.history


def test_minibatch_reads_the_clean_key_and_summarizes_each_epoch(tiny):
    items = [{**item, "clean": item["image"]} for item in tiny.dataset()]
    handler = QuantileAssignmentHandler(mode="minibatch", every_n_iterations=2, assignment_key="clean", seed=3)
    trainer = tiny.trainer(epochs=2, handlers=[handler], dataset=Dataset(items))  # 3 batches of 8 per epoch
    trainer.run()  # assignments after iterations 2, 4 and 6
    assert [(h["epoch"], h["n"]) for h in handler.history] == [(1.0, 8.0), (2.0, 16.0)]
    missing = QuantileAssignmentHandler(mode="minibatch", assignment_key="clean")
    with pytest.raises(KeyError, match="'clean'"):
        make_tiny().trainer(epochs=1, handlers=[missing]).run()


class _Scalars:
    """A stand-in ``SummaryWriter`` that records ``add_scalar`` calls (what TensorBoard would get)."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, step, value))

    def flush(self):
        pass


@pytest.mark.parametrize("mode", ["full", "minibatch"])
def test_assignment_metrics_are_reported_only_in_epochs_with_an_assignment(tiny, mode):
    # full: K = 2 over 4 epochs; minibatch: every 5th of 3 iterations per epoch (iterations 5 and 10)
    handler = (_handler(tiny, every_n_epochs=2) if mode == "full" else
               QuantileAssignmentHandler(mode="minibatch", every_n_iterations=5, seed=0))
    writer, stats = _Scalars(), StatsHandler(name=f"stats_{mode}", iteration_log=False)
    lines = []
    stats.logger.addHandler(logging.Handler())
    stats.logger.handlers[-1].emit = lambda record: lines.append(record.getMessage())
    trainer = tiny.trainer(epochs=4, handlers=[handler, stats, TensorBoardStatsHandler(writer, iteration_log=False)])
    trainer.run()
    assert [h["epoch"] for h in handler.history] == [2, 4]
    for key, stat in (("assignment_cost", "cost"), ("assignment_moved", "moved")):
        assert [(step, value) for tag, step, value in writer.scalars if tag == key] == \
            [(2, handler.history[0][stat]), (4, handler.history[1][stat])]
    # StatsHandler logs an epoch's metrics only when it has some: here, the assignment epochs only
    assert [line.split(" ")[0] for line in lines if "assignment_cost" in line] == ["Epoch[2]", "Epoch[4]"]


def test_pca_start_is_applied_at_the_first_epoch_only(tiny):
    reference = copy.deepcopy(tiny.bank)
    reference.init_pca(tiny.images)
    assert not torch.equal(reference.assignment, tiny.bank.assignment)  # the PCA start differs from the random one
    handler = _handler(tiny, every_n_epochs=5, init="pca")  # no assignment within the run
    tiny.trainer(epochs=2, handlers=[handler]).run()
    assert torch.equal(tiny.bank.assignment, reference.assignment)
    torch.testing.assert_close(tiny.bank.codes, reference.codes)
    # a run resumed after epoch 2 (as CheckpointLoader leaves it) keeps its codes
    tiny.bank.init_random(seed=7)
    shuffled = tiny.bank.assignment.clone()
    trainer = tiny.trainer(epochs=3, handlers=[_handler(tiny, every_n_epochs=5, init="pca")])
    trainer.state.epoch, trainer.state.iteration = 2, 6
    trainer.run()
    assert trainer.state.epoch == 3 and torch.equal(tiny.bank.assignment, shuffled)


def test_conditional_assignment_stays_within_classes():
    tiny = make_tiny(n=24, conditional=True)
    handler = _handler(tiny, every_n_epochs=1, settings={"method": "greedy"}, init="pca")
    tiny.trainer(epochs=2, handlers=[handler]).run()
    assert torch.equal(tiny.bank.lattice_groups[tiny.bank.assignment], tiny.labels)
    assert len(handler.history) == 2


def test_argument_errors(tiny):
    loader = assignment_loader(tiny.dataset())
    with pytest.raises(ValueError, match="mode"):
        QuantileAssignmentHandler(loader, mode="batch")
    with pytest.raises(ValueError, match="assignment_loader"):
        QuantileAssignmentHandler(mode="full")
    with pytest.raises(ValueError, match="assignment_loader"):
        QuantileAssignmentHandler(mode="minibatch", init="pca")
    with pytest.raises(ValueError, match="init"):
        QuantileAssignmentHandler(loader, init="sobol")
    with pytest.raises(ValueError, match="every_n_epochs"):
        QuantileAssignmentHandler(loader, every_n_epochs=0)
    with pytest.raises(ValueError, match=r"unknown assignment settings \['rho'\]"):
        QuantileAssignmentHandler(loader, settings={"rho": 0.5})
    with pytest.raises(ValueError, match="momentum"):
        QuantileAssignmentHandler(loader, settings={"momentum": 0.0})
    with pytest.raises(ValueError, match="method"):
        QuantileAssignmentHandler(loader, settings={"method": "sinkhorn"})
    with pytest.raises(TypeError, match="settings"):
        QuantileAssignmentHandler(loader, settings=[("method", "greedy")])

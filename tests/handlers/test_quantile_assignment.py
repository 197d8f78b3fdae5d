from __future__ import annotations

import copy
import io
import itertools
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
    handler = _handler(tiny, every_n_epochs=1, settings={"momentum": 1.0, "cost": "ssim_l1"})
    tiny.trainer(epochs=1, handlers=[handler]).run()
    outputs = decode(tiny.net, tiny.bank.lattice_points)
    cost7, cols7 = _optimum(tiny.images, outputs, SSIML1Loss(2, **TRAIN_LOSS))
    cost11, _ = _optimum(tiny.images, outputs, SSIML1Loss(2))
    assert abs(cost7 - cost11) > 1e-3  # the two windows give clearly different costs
    assert handler.history[-1]["cost"] == pytest.approx(cost7, abs=1e-6)
    assert tiny.bank.assignment.tolist() == cols7
    torch.testing.assert_close(tiny.bank.codes, tiny.bank.lattice_points[tiny.bank.assignment])


def test_a_loss_in_the_settings_overrides_the_trainers(tiny):
    handler = _handler(tiny, every_n_epochs=1, settings=AssignmentSettings(momentum=1.0, cost="ssim_l1",
                                                                             loss=SSIML1Loss(2)))
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


def test_default_cost_is_l2_and_the_papers_is_one_setting_away(tiny):
    handler = _handler(tiny, every_n_epochs=1, settings={"momentum": 1.0})
    tiny.trainer(epochs=1, handlers=[handler]).run()
    outputs = decode(tiny.net, tiny.bank.lattice_points)
    cost = pairwise_cost(tiny.images, outputs, kind="l2").double().numpy()
    rows, cols = linear_sum_assignment(cost)
    assert handler.settings.cost == "l2"
    assert handler.history[-1]["cost"] == pytest.approx(cost[rows, cols].mean(), abs=1e-6)
    assert tiny.bank.assignment.tolist() == cols.tolist()


def _expected_epochs(history, every, max_every, min_moved):
    """The assignment epochs the adaptive rule gives for the moved fractions the run saw."""
    epochs, interval, epoch = [], every, every
    for h in history:
        epochs.append(epoch)
        interval = every if h["moved"] >= min_moved else min(2 * interval, max_every)
        epoch += interval
    return epochs


def test_adaptive_schedule_doubles_the_interval_while_few_codes_move(tiny, caplog):
    # min_moved = 1: only an assignment that moves every code keeps the interval at K
    handler = _handler(tiny, every_n_epochs=1, min_moved=1.0, max_every_n_epochs=4)
    with caplog.at_level(logging.INFO):
        tiny.trainer(epochs=10, handlers=[handler]).run()
    epochs = [int(h["epoch"]) for h in handler.history]
    assert epochs == _expected_epochs(handler.history, 1, 4, 1.0)
    assert len(epochs) < 10 and max(b - a for a, b in itertools.pairwise(epochs)) == 4  # it skipped, up to the cap
    assert any("next assignment in 2 epochs (was 1)" in r.message for r in caplog.records)


def test_adaptive_schedule_resets_when_codes_move_again(tiny):
    handler = _handler(tiny, every_n_epochs=2, min_moved=0.5, max_every_n_epochs=8)
    handler.interval = 8
    engine = tiny.trainer(epochs=1)
    handler._adapt(engine, moved=0.6)
    assert handler.interval == 2
    for expected in (4, 8, 8):
        handler._adapt(engine, moved=0.1)
        assert handler.interval == expected


def test_adaptive_schedule_resumes_at_the_same_epochs(tiny):
    """A run stopped after epoch 5 and resumed from the handler's saved state continues the schedule where it was
    (the next assignment is the last one's epoch plus the saved interval), not from K again."""
    def make():
        return _handler(tiny, every_n_epochs=1, min_moved=1.0, max_every_n_epochs=4)

    full = make()
    tiny.trainer(epochs=5, handlers=[full]).run()
    buffer = io.BytesIO()
    torch.save(full.state_dict(), buffer)
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.interval == full.interval and resumed.history == full.history
    trainer = tiny.trainer(epochs=12, handlers=[resumed])
    trainer.state.epoch, trainer.state.iteration = 5, 15
    trainer.run()
    epochs = [int(h["epoch"]) for h in resumed.history]
    assert epochs == _expected_epochs(resumed.history, 1, 4, 1.0) and epochs[-1] > 5


def test_adaptive_schedule_errors(tiny):
    loader = assignment_loader(tiny.dataset())
    with pytest.raises(ValueError, match="min_moved"):
        QuantileAssignmentHandler(loader, min_moved=1.5)
    with pytest.raises(ValueError, match="max_every_n_epochs"):
        QuantileAssignmentHandler(loader, every_n_epochs=4, max_every_n_epochs=2)
    assert QuantileAssignmentHandler(loader, every_n_epochs=3).max_every_n_epochs == 12

"""DivergenceGuard: a diverged run stops with a message and never overwrites the last good checkpoints."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from monai_neurosql import SSIML1Loss
from monai_neurosql.data import assignment_loader, train_loader
from monai_neurosql.engines import NeuroSQLTrainer
from monai_neurosql.handlers import (
    AtomicCheckpointSaver,
    DivergenceGuard,
    QuantileAssignmentHandler,
    TrainingDivergedError,
)
from monai_neurosql.latent_bank import LatentBank
from monai_neurosql.networks import ConvGenerator
from tests.helpers import indexed_dataset, shapes


def _trainer(lr: float, epochs: int, handlers=(), n: int = 16):
    images, _ = shapes(n, size=16, seed=0)
    torch.manual_seed(0)
    net = ConvGenerator(2, 3, spatial_size=16, channels=(8, 8))
    bank = LatentBank.create(n, 3, seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    ds = indexed_dataset(images)
    assignment = QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=1)
    trainer = NeuroSQLTrainer("cpu", epochs, train_loader(ds, 8, seed=0), net, bank, opt,
                              loss_function=SSIML1Loss(2, win_size=7), train_handlers=[assignment, *handlers], seed=0)
    return trainer, net


def _scripted_metric(costs):
    def validate(engine):
        engine.state.metrics["val_assignment_cost"] = costs[engine.state.epoch - 1]
    return validate


def _saver(path, net, trainer, guard):
    return AtomicCheckpointSaver(path, {"generator": net, "trainer": trainer, "guard": guard}, save_interval=1,
                                 interval_filename="model.pt", save_key_metric=True,
                                 key_metric_name="val_assignment_cost", key_metric_negative_sign=True,
                                 key_metric_filename="best.pt")


def _epoch(path):
    state = torch.load(path, weights_only=True)["trainer"]
    return state["iteration"] // state["epoch_length"]


def test_huge_learning_rate_is_stopped_before_anything_is_saved(tmp_path):
    # at lr 1e3 the loss stays finite (exit code 0 and blank images before the guard) while the weights explode
    guard = DivergenceGuard()
    trainer, net = _trainer(lr=1e3, epochs=6)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _scripted_metric([0.7] * 6))
    guard.attach(trainer)
    _saver(tmp_path, net, trainer, guard).attach(trainer)
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 1: the generator's weights exploded .*"
                                                    r"Try a 10x lower learning_rate"):
        trainer.run()
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "best.pt").exists()


def test_a_healthy_run_passes_and_the_state_resumes():
    guard = DivergenceGuard(stall_assignments=3)
    trainer, _ = _trainer(lr=3e-3, epochs=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _scripted_metric([0.5, 0.4, 0.3]))
    guard.attach(trainer)
    trainer.run()
    assert trainer.state.epoch == 3 and guard.stopped is None
    other = DivergenceGuard()
    other.load_state_dict(guard.state_dict())
    assert (other.best, other.best_epoch, other.rounds_since_best) == (0.3, 3, 0)


def test_stalled_validation_cost_stops_the_run_and_says_so(caplog):
    guard = DivergenceGuard(stall_assignments=2, min_delta=0.01)
    trainer, _ = _trainer(lr=3e-3, epochs=8)
    # 0.5 then changes below 1%: two assignment rounds without improvement stop the run after epoch 3
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _scripted_metric([0.5, 0.499, 0.498, 0.4, 0.3, 0.2, 0.1, 0.1]))
    guard.attach(trainer)
    with caplog.at_level("WARNING"):
        trainer.run()
    assert trainer.state.epoch == 3
    assert "has not improved by more than 1% for 2 assignment rounds (best 0.5000 at epoch 1" in guard.stopped
    assert any(guard.stopped == r.message for r in caplog.records)


@pytest.mark.parametrize("poison,match", [
    (lambda net: next(net.parameters()).data.fill_(float("nan")), "holds NaN or infinite values"),
    (lambda net: next(net.parameters()).data.mul_(1e5), "weights exploded"),
])
def test_non_finite_or_exploding_weights_keep_the_last_good_checkpoints(poison, match, tmp_path):
    guard = DivergenceGuard()
    trainer, net = _trainer(lr=3e-3, epochs=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _scripted_metric([0.5, 0.1, 0.1]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: poison(net))
    guard.attach(trainer)
    _saver(tmp_path, net, trainer, guard).attach(trainer)
    with pytest.raises(TrainingDivergedError, match=f"at epoch 2: .*{match}"):
        trainer.run()
    assert _epoch(tmp_path / "model.pt") == 1 and _epoch(tmp_path / "best.pt") == 1  # 0.1 at epoch 2 is not best
    weights = torch.load(tmp_path / "best.pt", weights_only=True)["generator"]
    assert all(bool(torch.isfinite(w).all()) and float(w.abs().max()) < 1e3 for w in weights.values()
               if w.is_floating_point())


def test_constant_output_and_non_finite_metric():
    guard = DivergenceGuard()
    trainer, net = _trainer(lr=3e-3, epochs=2)

    def constant(engine):
        for p in net.parameters():  # every weight zero: every pixel is the same sigmoid of zero
            p.data.zero_()

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), constant)
    guard.attach(trainer)
    with pytest.raises(TrainingDivergedError, match="samples are constant"):
        trainer.run()

    guard = DivergenceGuard()
    trainer, _ = _trainer(lr=3e-3, epochs=2)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _scripted_metric([float("nan")] * 2))
    guard.attach(trainer)
    with pytest.raises(TrainingDivergedError, match="val_assignment_cost became nan"):
        trainer.run()


def test_argument_errors():
    with pytest.raises(ValueError, match="max_abs_weight"):
        DivergenceGuard(max_abs_weight=0)
    with pytest.raises(ValueError, match="max_saturated"):
        DivergenceGuard(max_saturated=2)
    with pytest.raises(ValueError, match="num_probe"):
        DivergenceGuard(num_probe=1)

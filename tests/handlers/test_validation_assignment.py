from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events

from monai_neurosql import AssignmentSettings, SSIML1Loss
from monai_neurosql.data import assignment_loader
from monai_neurosql.handlers import QuantileAssignmentHandler, ValidationAssignmentCost
from monai_neurosql.validation import heldout_assignment_cost
from tests.handlers.tiny_trainer import TRAIN_LOSS, make_tiny
from tests.helpers import indexed_dataset, shapes


@pytest.fixture
def tiny():
    return make_tiny()


def _val_loader(n=12, seed=5, labels=False):
    images, classes = shapes(n, size=16, seed=seed)
    return images, classes, assignment_loader(indexed_dataset(images, classes if labels else None), batch_size=5)


def _recorded(trainer, name="val_assignment_cost"):
    values = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: values.append(e.state.metrics.get(name)))
    return values


def test_value_is_the_heldout_cost_under_the_trainers_loss(tiny, caplog):
    images, _, loader = _val_loader()
    handler = ValidationAssignmentCost(loader, every_n_epochs=2, seed=3)
    trainer = tiny.trainer(epochs=4, handlers=[handler])
    values = _recorded(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run()
    assert values[0] is None and values[1] is not None and values[2] == values[1]  # epochs 2 and 4 only
    expected = {win: heldout_assignment_cost(tiny.net, images, tiny.bank.prior, tiny.bank.dim, seed=3,
                                             settings={"loss": SSIML1Loss(2, win_size=win)}) for win in (7, 11)}
    assert abs(expected[7] - expected[11]) > 1e-3
    assert values[3] == pytest.approx(expected[TRAIN_LOSS["win_size"]], abs=1e-6)
    assert any("val_assignment_cost = " in r.message for r in caplog.records)


def test_settings_and_a_fixed_subset(tiny):
    images, _, loader = _val_loader(n=20)
    handler = ValidationAssignmentCost(loader, metric_name="val", max_images=8, seed=4,
                                       settings={"loss": SSIML1Loss(2), "method": "greedy"})
    trainer = tiny.trainer(epochs=1, handlers=[handler])
    trainer.run()
    keep = torch.randperm(20, generator=torch.Generator().manual_seed(4))[:8].sort().values
    expected = heldout_assignment_cost(tiny.net, images[keep], tiny.bank.prior, tiny.bank.dim, seed=4,
                                       settings={"method": "greedy"})
    assert trainer.state.metrics["val"] == pytest.approx(expected, abs=1e-6)


def test_conditional_generators_are_validated_per_class():
    tiny = make_tiny(n=16, conditional=True)
    images, classes, loader = _val_loader(labels=True)
    handler = ValidationAssignmentCost(loader)
    trainer = tiny.trainer(epochs=1, handlers=[handler])
    trainer.run()
    expected = heldout_assignment_cost(tiny.net, images, tiny.bank.prior, tiny.bank.dim, labels=classes,
                                       seed=12345, settings={"loss": SSIML1Loss(2, **TRAIN_LOSS)})
    assert trainer.state.metrics["val_assignment_cost"] == pytest.approx(expected, abs=1e-6)


def test_errors(tiny):
    with pytest.raises(ValueError, match="every_n_epochs"):
        ValidationAssignmentCost([], every_n_epochs=0)
    with pytest.raises(ValueError, match="unknown assignment settings"):
        ValidationAssignmentCost([], settings={"window": 7})
    with pytest.raises(ValueError, match="validation loader is empty"):
        tiny.trainer(epochs=1, handlers=[ValidationAssignmentCost([])]).run()


def test_the_validation_cost_measures_the_training_loss_by_default(tiny):
    """The assignment's default cost is L2; the held-out validation cost stays SSIM+L1 (the training loss) unless
    settings name another cost."""
    images = tiny.images[:8]
    assert ValidationAssignmentCost([{"image": images}]).settings.cost == "ssim_l1"
    default = heldout_assignment_cost(tiny.net, images, tiny.bank.prior, tiny.bank.dim, seed=1)
    ssim_l1 = heldout_assignment_cost(tiny.net, images, tiny.bank.prior, tiny.bank.dim, seed=1,
                                      settings={"cost": "ssim_l1"})
    l2 = heldout_assignment_cost(tiny.net, images, tiny.bank.prior, tiny.bank.dim, seed=1, settings={"cost": "l2"})
    assert default == ssim_l1 and abs(default - l2) > 1e-3
    assert ValidationAssignmentCost([{"image": images}], settings={"cost": "l2"}).settings.cost == "l2"
    assert ValidationAssignmentCost([{"image": images}], settings={"method": "greedy"}).settings.cost == "ssim_l1"
    # a settings object naming no cost means what the dict of the same fields means (it validated on L2 before)
    greedy = AssignmentSettings(method="greedy")
    assert ValidationAssignmentCost([{"image": images}], settings=greedy).settings.cost == "ssim_l1"
    assert QuantileAssignmentHandler([{"image": images, "index": 0}], settings=greedy).settings.cost == "l2"

from __future__ import annotations

import pytest
import torch

from monai_neurosql import AssignmentSettings, SSIML1Loss, pairwise_cost
from monai_neurosql.assignment import ASSIGNMENT_COST, DEFAULT_MAX_DENSE_BYTES


def test_coerce_from_none_dict_and_instance():
    assert AssignmentSettings.coerce(None) == AssignmentSettings()
    settings = AssignmentSettings.coerce({"method": "greedy", "momentum": 0.5, "candidates": 16})
    assert (settings.method, settings.momentum, settings.candidates) == ("greedy", 0.5, 16)
    # no cost named: the place of use fills its default (the training assignment: L2, issue 13)
    assert settings.max_dense_bytes == DEFAULT_MAX_DENSE_BYTES and settings.cost is None
    assert settings.with_default_cost("l2").cost == "l2" == ASSIGNMENT_COST
    assert AssignmentSettings(cost="ssim_l1").with_default_cost("l2").cost == "ssim_l1"
    with pytest.raises(ValueError, match="cost must be one of"):
        AssignmentSettings(cost="ssim")
    assert AssignmentSettings.coerce(settings) is settings


def test_with_loss_fills_only_an_unset_ssim_l1_loss():
    train_loss = SSIML1Loss(2, win_size=7)
    assert AssignmentSettings().with_loss(train_loss).loss is train_loss
    own = AssignmentSettings(loss=SSIML1Loss(2))
    assert own.with_loss(train_loss) is own  # a loss named in the settings wins
    plain = AssignmentSettings()
    assert plain.with_loss(torch.nn.MSELoss()) is plain and plain.with_loss(None) is plain
    assert plain.loss is None  # with_loss returns a copy; the original is left as it was


def test_cost_matrix_is_pairwise_cost_under_the_settings():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 1, 12, 12, generator=g), torch.rand(4, 1, 12, 12, generator=g)
    loss = SSIML1Loss(2, win_size=5, ssim_weight=0.8)
    torch.testing.assert_close(AssignmentSettings(cost="ssim_l1", loss=loss).cost_matrix(x, y),
                               pairwise_cost(x, y, loss=loss))
    torch.testing.assert_close(AssignmentSettings().cost_matrix(x, y), pairwise_cost(x, y, kind="l2"))


@pytest.mark.parametrize("field,value,error", [
    ("method", "sinkhorn", ValueError), ("cost", "ssim", ValueError), ("momentum", 1.5, ValueError),
    ("block_rows", 0, ValueError), ("max_dense_bytes", -1, ValueError), ("loss", torch.nn.L1Loss(), TypeError),
])
def test_invalid_settings_name_the_field(field, value, error):
    with pytest.raises(error, match=field):
        AssignmentSettings(**{field: value})


def test_coerce_errors():
    with pytest.raises(ValueError, match=r"unknown assignment settings \['win_size'\]"):
        AssignmentSettings.coerce({"win_size": 7})
    with pytest.raises(TypeError, match="AssignmentSettings"):
        AssignmentSettings.coerce("greedy")

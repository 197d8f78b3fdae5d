from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, LrScheduleHandler
from scipy.optimize import linear_sum_assignment

from monai_neurosql import SSIML1Loss
from monai_neurosql.data import assignment_loader, train_loader
from monai_neurosql.engines import AssignmentEvents, NeuroSQLTrainer
from monai_neurosql.generate import decode, generate
from monai_neurosql.handlers import AtomicCheckpointSaver, QuantileAssignmentHandler
from monai_neurosql.latent_bank import LatentBank
from monai_neurosql.networks import ConvGenerator
from tests.helpers import indexed_dataset, shapes

LOSS = {"win_size": 7}


def _setup(n=64, d=3, lr=3e-3, seed=0, size=16, labels=False, depth=None):
    images, classes = shapes(n, size=size, seed=seed, depth=depth)
    torch.manual_seed(seed)
    spatial_dims = 2 if depth is None else 3
    out_size = size if depth is None else (depth, size, size)
    net = ConvGenerator(spatial_dims, d, spatial_size=out_size, channels=(32, 16, 8),
                        num_classes=2 if labels else None)
    bank = LatentBank.class_conditional(classes, d, seed=seed) if labels else LatentBank.create(n, d, seed=seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    return images, classes, net, bank, opt


def _trainer(images, classes, net, bank, opt, epochs, handlers=(), batch_size=16, labels=False, seed=0):
    ds = indexed_dataset(images, classes if labels else None)
    loss = SSIML1Loss(images.ndim - 2, **LOSS)
    return NeuroSQLTrainer("cpu", epochs, train_loader(ds, batch_size, seed=seed), net, bank, opt,
                           loss_function=loss, train_handlers=list(handlers), seed=seed)


class _ByHand:
    """The pieces of Algorithms 1 and 2 written out: a clipped AdamW step on a batch, and the literal optimal
    assignment of images to generated lattice points (cost from the loss pair by pair, scipy's exact solver)."""

    def __init__(self, net, lr):
        self.g = net.to(memory_format=torch.channels_last)  # as the trainer lays its generator out on the CPU
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        self.loss = SSIML1Loss(2, **LOSS)
        self.per_pair = SSIML1Loss(2, reduction="none", **LOSS)

    def step(self, codes, images, idx):
        self.g.train()
        self.optimizer.zero_grad()
        self.loss(self.g(codes[idx]), images[idx]).backward()
        torch.nn.utils.clip_grad_norm_(self.g.parameters(), 1.0)
        self.optimizer.step()

    def assign(self, images, points):
        self.g.eval()
        with torch.no_grad():
            outputs = self.g(points)
            cost = torch.stack([self.per_pair(image[None].expand_as(outputs), outputs) for image in images])
        return torch.from_numpy(linear_sum_assignment(cost.double().numpy())[1])

    def assert_matches(self, net, bank, codes):
        torch.testing.assert_close(bank.codes, codes, rtol=0, atol=1e-6)
        for p, q in zip(net.parameters(), self.g.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_trainer_equals_handwritten_algorithm_1():
    # a high learning rate makes the generator's outputs distinct before the first assignment: with nearly
    # identical outputs, many assignments are optimal to float precision and two exact solvers may pick
    # different ones
    images, classes, net, bank, opt = _setup(n=48, lr=2e-2)
    by_hand, codes, lattice = _ByHand(copy.deepcopy(net), 2e-2), bank.codes.clone(), bank.lattice_points.clone()
    handler = QuantileAssignmentHandler(assignment_loader(indexed_dataset(images), batch_size=20), every_n_epochs=3,
                                        settings={"momentum": 0.7, "cost": "ssim_l1"})  # the paper
    _trainer(images, classes, net, bank, opt, epochs=6, handlers=[handler]).run()

    # Algorithm 1 by hand: epoch order from DistributedSampler(seed=0) at epoch e, steps, every 3 epochs a
    # literal cost matrix from the loss, scipy's exact assignment, and the momentum update
    for epoch in range(1, 7):
        for idx in torch.randperm(48, generator=torch.Generator().manual_seed(0 + epoch)).split(16):
            by_hand.step(codes, images, idx)
        if epoch % 3 == 0:
            codes = 0.7 * lattice[by_hand.assign(images, lattice)] + 0.3 * codes
    by_hand.assert_matches(net, bank, codes)
    assert len(handler.history) == 2 and handler.history[-1]["epoch"] == 6


def test_trainer_equals_handwritten_algorithm_2():
    """Mini-batch NeuroSQL (Algorithm 2): after every generator step, the batch is matched to a random lattice
    subset of its size (m x m cost from the loss, exact solve) and its codes take the momentum update."""
    images, classes, net, bank, opt = _setup(n=32, lr=2e-2)
    by_hand, codes, lattice = _ByHand(copy.deepcopy(net), 2e-2), bank.codes.clone(), bank.lattice_points.clone()
    handler = QuantileAssignmentHandler(mode="minibatch", settings={"momentum": 0.7, "cost": "ssim_l1"}, seed=5)
    _trainer(images, classes, net, bank, opt, epochs=3, handlers=[handler], batch_size=8).run()

    for epoch in range(1, 4):
        subsets = torch.Generator().manual_seed(5 + epoch)  # the handler's seed + epoch (rank 0)
        for idx in torch.randperm(32, generator=torch.Generator().manual_seed(0 + epoch)).split(8):
            by_hand.step(codes, images, idx)
            subset = torch.randperm(32, generator=subsets)[: len(idx)]
            codes[idx] = 0.7 * lattice[subset[by_hand.assign(images[idx], lattice[subset])]] + 0.3 * codes[idx]
    by_hand.assert_matches(net, bank, codes)
    assert [h["epoch"] for h in handler.history] == [1.0, 2.0, 3.0]


def test_assignment_matters():
    """Same budget: learned assignment reaches a clearly lower loss than codes frozen at their random start."""
    final = {}
    for assign in (True, False):
        images, classes, net, bank, opt = _setup(n=256, d=4)
        ds = indexed_dataset(images)
        handlers = [QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=2)] if assign else []
        _trainer(images, classes, net, bank, opt, epochs=8, handlers=handlers, batch_size=32).run()
        final[assign] = SSIML1Loss(2, **LOSS)(decode(net, bank.codes), images).item()
    assert final[True] < 0.75 * final[False], final


def test_minibatch_mode_algorithm_2():
    images, classes, net, bank, opt = _setup(n=64)
    start = bank.assignment.clone()
    handler = QuantileAssignmentHandler(mode="minibatch", settings={"method": "greedy"}, seed=1)
    events = []
    trainer = _trainer(images, classes, net, bank, opt, epochs=2, handlers=[handler])
    batch_points = []

    @trainer.on(AssignmentEvents.ASSIGNMENT_COMPLETED)
    def _record(engine):
        events.append(engine.state.assignment)
        batch_points.append(engine.bank.assignment[engine.state.batch["index"]].tolist())

    trainer.run()
    assert len(events) == 2 * 4  # every iteration
    assert all(s["n"] == 16 for s in events)
    # each m x m assignment gives the batch's 16 images 16 distinct lattice points (Algorithm 2 is a permutation
    # per batch only: across batches two images may hold the same point)
    assert all(len(set(points)) == 16 and 0 <= min(points) and max(points) < 64 for points in batch_points)
    assert not torch.equal(bank.assignment, start)
    assert len(handler.history) == 2 and 0 <= handler.history[-1]["moved"] <= 1
    assert "assignment_cost" in trainer.state.metrics


def test_iteration_output_is_readable_by_handlers():
    images, classes, net, bank, opt = _setup(n=16)
    trainer = _trainer(images, classes, net, bank, opt, epochs=1)
    trainer.run()
    output = trainer.state.output
    assert set(output) >= {"image", "pred", "loss", "index"} and isinstance(output["loss"], float)
    assert output["pred"].shape == output["image"].shape and not output["pred"].requires_grad


def _resumable(tmp_path, epochs, load_from=None):
    images, classes, net, bank, opt = _setup(n=48)
    ds = indexed_dataset(images)
    handler = QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4 * 3)
    trainer = _trainer(images, classes, net, bank, opt, epochs=epochs)
    save_dict = {"generator": net, "optimizer": opt, "lr_scheduler": scheduler, "bank": bank,
                 "assignment": handler, "trainer": trainer}
    handlers = [LrScheduleHandler(scheduler, epoch_level=False, print_lr=False), handler,
                AtomicCheckpointSaver(str(tmp_path), save_dict, save_interval=1, interval_filename="model.pt")]
    if load_from is not None:
        handlers.insert(0, CheckpointLoader(load_from, save_dict))
    for h in handlers:
        h.attach(trainer)
    trainer.run()
    return net, bank, handler, trainer


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    net_a, bank_a, handler_a, _ = _resumable(tmp_path / "a", epochs=4)
    _resumable(tmp_path / "b", epochs=2)
    assert (tmp_path / "b" / "model.pt").exists()
    net_b, bank_b, handler_b, trainer_b = _resumable(tmp_path / "b", epochs=4,
                                                     load_from=str(tmp_path / "b" / "model.pt"))
    assert trainer_b.state.epoch == 4
    torch.testing.assert_close(bank_b.codes, bank_a.codes, rtol=0, atol=0)
    for p, q in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [h["epoch"] for h in handler_b.history] == [2.0, 4.0]
    assert [h["cost"] for h in handler_b.history] == [h["cost"] for h in handler_a.history]


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    images, classes, net, bank, opt = _setup(n=32)
    trainer = _trainer(images, classes, net, bank, opt, epochs=3)
    AtomicCheckpointSaver(str(tmp_path), {"generator": net, "bank": bank}, save_interval=1,
                          interval_filename="model.pt").attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED(once=1))
    def poison(engine):
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="NeuroSQLTrainer loss became nan at epoch 2"):
        trainer.run()
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_class_conditional_generation_follows_the_label():
    images, classes, net, bank, opt = _setup(n=128, d=3, labels=True)
    ds = indexed_dataset(images, classes)
    handler = QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=2)
    _trainer(images, classes, net, bank, opt, epochs=6, handlers=[handler], labels=True).run()
    assert torch.equal(bank.lattice_groups[bank.assignment], classes)  # codes never leave their class
    per_pair = SSIML1Loss(2, reduction="none", **LOSS)
    for c in (0, 1):
        samples = generate(net, 16, bank.lattice, seed=c, labels=c)
        dist = {k: torch.stack([per_pair(s[None].expand_as(images[classes == k]), images[classes == k]).min()
                                for s in samples]).mean().item() for k in (0, 1)}
        assert dist[c] < dist[1 - c], (c, dist)


def test_3d_end_to_end():
    images, classes, net, bank, opt = _setup(n=24, d=3, size=16, depth=16)
    ds = indexed_dataset(images)
    handler = QuantileAssignmentHandler(assignment_loader(ds), every_n_epochs=1)
    trainer = _trainer(images, classes, net, bank, opt, epochs=2, handlers=[handler], batch_size=8)
    trainer.run()
    assert len(handler.history) == 2 and np.isfinite(handler.history[-1]["cost"])
    volumes = generate(net, 2, bank.lattice, seed=0)
    assert volumes.shape == (2, 1, 16, 16, 16) and 0 <= volumes.min() and volumes.max() <= 1


def test_bad_batches_have_clear_errors():
    images, classes, net, bank, opt = _setup(n=16)
    no_index = torch.utils.data.DataLoader([{"image": images[i]} for i in range(16)], batch_size=4)
    trainer = NeuroSQLTrainer("cpu", 1, no_index, net, bank, opt)
    with pytest.raises(KeyError, match="dataset index"):
        trainer.run()
    too_big = torch.utils.data.DataLoader([{"image": images[i], "index": i + 100} for i in range(16)], batch_size=4)
    with pytest.raises(IndexError, match="one row per training"):
        NeuroSQLTrainer("cpu", 1, too_big, net, bank, opt).run()
    with pytest.raises(ValueError, match="assignment_loader"):
        QuantileAssignmentHandler(mode="full")
    with pytest.raises(ValueError, match="exactly once"):
        handler = QuantileAssignmentHandler(torch.utils.data.DataLoader(
            [{"image": images[i], "index": i % 8} for i in range(16)], batch_size=4))
        t = _trainer(images, classes, net, bank, opt, epochs=2, handlers=[handler])
        t.run()

"""DDP training with the global assignment: 2 gloo processes on CPU against a 1-process run of the same batches."""

from __future__ import annotations

import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.handlers import CheckpointLoader
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from monai_neurosql import SSIML1Loss
from monai_neurosql.data import train_loader
from monai_neurosql.engines import NeuroSQLTrainer
from monai_neurosql.handlers import AtomicCheckpointSaver, QuantileAssignmentHandler
from monai_neurosql.latent_bank import LatentBank
from monai_neurosql.networks import ConvGenerator
from tests.helpers import indexed_dataset, shapes

N, BATCH, EPOCHS, WORLD = 48, 8, 3, 2


def _model():
    torch.manual_seed(0)
    # instance norm: per-sample statistics, so a batch split over two ranks computes what the whole batch does
    return ConvGenerator(2, 3, spatial_size=16, channels=(16, 8), norm=("instance", {"affine": True}))


def _parts(mode: str):
    images, _ = shapes(N, size=16, seed=0)
    net = _model()
    bank = LatentBank.create(N, 3, seed=0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-3)
    return images, indexed_dataset(images), net, bank, optimizer


def _worker(rank: int, init_file: str, out_dir: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    _, ds, net, bank, optimizer = _parts(mode)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    assign_loader = DataLoader(ds, batch_size=16, sampler=DistributedSampler(ds, shuffle=False))
    sparse = {"max_dense_bytes": 1024, "candidates": 8} if mode == "sparse" else {}
    handler = QuantileAssignmentHandler(assign_loader if mode != "minibatch" else None,
                                        mode="minibatch" if mode == "minibatch" else "full", every_n_epochs=1,
                                        settings=sparse)
    trainer = NeuroSQLTrainer("cpu", EPOCHS, train_loader(ds, BATCH, seed=0), ddp, bank, optimizer,
                              loss_function=SSIML1Loss(2, win_size=7), train_handlers=[handler], seed=0)
    # attached on every rank, written by rank 0 only
    AtomicCheckpointSaver(out_dir, {"generator": net, "optimizer": optimizer, "bank": bank, "assignment": handler,
                                    "trainer": trainer},
                          save_interval=1, interval_filename=f"{mode}.pt").attach(trainer)
    trainer.run()
    assert all(p.is_contiguous() for p in net.parameters())  # a DDP generator is left as its owner built it
    torch.save({"codes": bank.codes, "assignment": bank.assignment, "weights": net.state_dict(),
                "history": handler.history}, os.path.join(out_dir, f"{mode}_rank{rank}.pt"))
    # tear down in order: both ranks done, the DDP reducer (its gloo work) released, then the process group; a rank
    # that destroyed the group while its DDP module was alive aborted once in CI ("terminate called without an
    # active exception", SIGABRT at exit, about 1 run in 5 full suites)
    dist.barrier()
    del trainer, ddp
    gc.collect()
    dist.destroy_process_group()


class _GlobalBatches:
    """The 2-rank global batches, for one process: rank 0's k-th batch followed by rank 1's k-th batch."""

    def __init__(self) -> None:
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        order = torch.randperm(N, generator=torch.Generator().manual_seed(0 + self.epoch)).tolist()
        shards = [order[r::WORLD] for r in range(WORLD)]
        for k in range(0, N // WORLD, BATCH):
            yield [i for shard in shards for i in shard[k : k + BATCH]]

    def __len__(self) -> int:
        return N // WORLD // BATCH


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "minibatch", "sparse"])
def test_two_processes_match_one_and_keep_banks_identical(tmp_path, mode):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), mode), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"{mode}_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # every rank's bank and weights are identical
    assert torch.equal(results[0]["codes"], results[1]["codes"])
    assert torch.equal(results[0]["assignment"], results[1]["assignment"])
    for a, b in zip(results[0]["weights"].values(), results[1]["weights"].values()):
        assert torch.equal(a, b)
    assert len(results[0]["history"]) == EPOCHS
    assert sorted(os.listdir(tmp_path)).count(f"{mode}.pt") == 1  # one checkpoint file, written by rank 0
    if mode == "minibatch":
        assert results[0]["history"][-1]["n"] == N  # every image was assigned once per epoch, over both ranks
        return
    if mode == "sparse":
        assert all(h["sparse"] == 1 and h["certified"] == 1 for h in results[0]["history"])
    # the global assignment equals one process on the same global batches, up to the reduction order
    _, ds, net, bank, optimizer = _parts(mode)
    loader = DataLoader(ds, batch_sampler=_GlobalBatches())
    handler = QuantileAssignmentHandler(DataLoader(ds, batch_size=16), every_n_epochs=1,
                                        settings={"max_dense_bytes": 1024, "candidates": 8} if mode == "sparse" else {})
    # the DDP generator trains with its weights as stored (the trainer lays out only an unwrapped one): so does this one
    NeuroSQLTrainer("cpu", EPOCHS, loader, net, bank, optimizer, loss_function=SSIML1Loss(2, win_size=7),
                    train_handlers=[handler], seed=0, channels_last=False).run()
    assert torch.equal(bank.assignment, results[0]["assignment"])
    torch.testing.assert_close(bank.codes, results[0]["codes"], rtol=0, atol=1e-6)
    # compare what the weights compute: a bias right before instance norm has a zero gradient up to float noise,
    # which AdamW scales to full steps, so raw weights may differ where the function does not
    twin = _model()
    twin.load_state_dict(results[0]["weights"])
    net.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(bank.lattice_points), twin(bank.lattice_points), rtol=0, atol=1e-4)
    assert [h["cost"] for h in handler.history] == pytest.approx([h["cost"] for h in results[0]["history"]], abs=1e-6)


@pytest.mark.slow
def test_resume_a_two_process_checkpoint_in_one_process(tmp_path):
    """A checkpoint written by rank 0 of a 2-process run resumes in a single process (a different world size)."""
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), "full"), nprocs=WORLD, join=True)
    _, ds, net, bank, optimizer = _parts("full")
    handler = QuantileAssignmentHandler(DataLoader(ds, batch_size=16), every_n_epochs=1)
    trainer = NeuroSQLTrainer("cpu", EPOCHS + 2, train_loader(ds, BATCH, seed=0), net, bank, optimizer,
                              loss_function=SSIML1Loss(2, win_size=7), train_handlers=[handler], seed=0)
    CheckpointLoader(str(tmp_path / "full.pt"), {"generator": net, "optimizer": optimizer, "bank": bank,
                                                 "assignment": handler, "trainer": trainer}).attach(trainer)
    saved = torch.load(tmp_path / "full_rank0.pt", weights_only=True)
    trainer.run()
    assert trainer.state.epoch == EPOCHS + 2
    assert [h["epoch"] for h in handler.history] == [float(e) for e in range(1, EPOCHS + 3)]
    assert handler.history[:EPOCHS] == saved["history"]

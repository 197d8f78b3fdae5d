"""The DDP exchange (monai_neurosql.distributed) and what is built on it, on 2 gloo processes on CPU."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from monai_neurosql import LatentBank, QuantileLattice
from monai_neurosql.distributed import broadcast, gather_rows, sum_over_ranks, world
from monai_neurosql.handlers import QuantileAssignmentHandler
from monai_neurosql.networks import ConvGenerator
from monai_neurosql.validation import heldout_assignment_cost
from tests.helpers import indexed_dataset, shapes

WORLD = 2


def test_single_process_is_a_no_op():
    assert world() == (False, 0, 1)
    rows, values = torch.tensor([2, 0]), torch.rand(2, 3)
    assert gather_rows(values, rows) == (rows, values)
    t = torch.arange(3)
    assert broadcast(t) is t and sum_over_ranks(1.5) == 1.5 and sum_over_ranks(t) is t


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {"world": torch.tensor(world()[1:])}
    # uneven shards, row 3 held by both ranks (as DistributedSampler pads)
    rows = torch.tensor([4, 0, 3]) if rank == 0 else torch.tensor([3, 1])
    ids, values = gather_rows(rows[:, None].double() * 10 + rank, rows)
    results["ids"], results["values"] = ids, values[:, 0]
    results["broadcast"] = broadcast(torch.tensor([rank + 7]))
    results["sum"] = torch.tensor([sum_over_ranks(float(rank + 1))])
    results["sum_tensor"] = sum_over_ranks(torch.tensor([rank, 1]))
    # the PCA start of the handler, from each rank's shard of the assignment images
    images, _ = shapes(20, size=16, seed=0)
    ds = indexed_dataset(images)
    bank = LatentBank(QuantileLattice.sobol_gaussian(20, 3), seed=rank)  # different random starts on each rank
    handler = QuantileAssignmentHandler(DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, shuffle=False)),
                                        init="pca")
    handler.logger = logging.getLogger("test")
    engine = SimpleNamespace(bank=bank, state=SimpleNamespace(device=torch.device("cpu"), epoch=1))
    handler._start_from_pca(engine)
    results["pca_assignment"], results["pca_codes"] = bank.assignment, bank.codes
    # the held-out cost is local: rank 0 alone may compute it while rank 1 waits at the barrier
    if rank == 0:
        torch.manual_seed(0)
        net = ConvGenerator(2, 3, spatial_size=16, channels=(8, 8))
        results["heldout"] = torch.tensor([heldout_assignment_cost(net, images[:10], "gaussian", 3, seed=1)])
    dist.barrier()
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_exchange_pca_start_and_local_heldout_cost(tmp_path):
    context = mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:  # a collective that only one rank entered would hang forever
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process run did not finish within 300 s (a deadlock?)")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["world"].tolist() == [0, 2] and r1["world"].tolist() == [1, 2]
    for r in (r0, r1):
        assert r["ids"].tolist() == [0, 1, 3, 4]
        assert r["values"].tolist() == [0.0, 11.0, 30.0, 40.0]  # the first holder of row 3 (rank 0) is kept
        assert r["broadcast"].tolist() == [7] and r["sum"].tolist() == [3.0]
        assert r["sum_tensor"].tolist() == [1, 2]
    reference = LatentBank(QuantileLattice.sobol_gaussian(20, 3), seed=5)
    reference.init_pca(shapes(20, size=16, seed=0)[0])
    for r in (r0, r1):
        assert torch.equal(r["pca_assignment"], reference.assignment)
        torch.testing.assert_close(r["pca_codes"], reference.codes)
    torch.manual_seed(0)
    net = ConvGenerator(2, 3, spatial_size=16, channels=(8, 8))
    expected = heldout_assignment_cost(net, shapes(20, size=16, seed=0)[0][:10], "gaussian", 3, seed=1)
    assert r0["heldout"].item() == pytest.approx(expected, abs=1e-6)

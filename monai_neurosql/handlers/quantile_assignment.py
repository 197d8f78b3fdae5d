"""The quantile-assignment step of NeuroSQL as an ignite/MONAI handler (Algorithms 1 and 2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.utils import convert_to_tensor

from ..assignment import ASSIGNMENT_METHODS, DEFAULT_MAX_DENSE_BYTES, assign_codes, collect_images
from ..engines.events import AssignmentEvents
from ..cost import COST_KINDS
from ..losses import SSIML1Loss

if TYPE_CHECKING:
    from ..engines.neurosql_trainer import NeuroSQLTrainer

__all__ = ["QuantileAssignmentHandler"]


class QuantileAssignmentHandler:
    """Re-assigns the latent codes of a :class:`~monai_neurosql.engines.NeuroSQLTrainer`.

    - ``mode="full"`` (Algorithm 1): every ``every_n_epochs`` epochs (K of the paper, ``K in {2, 3, 5}``), the
      images of ``assignment_loader`` (the training images with deterministic transforms only: no random
      augmentation) are matched to the whole lattice; ``G(Q)`` is decoded in batches, the cost rows are
      built in blocks, the assignment is solved once, and the bank takes the momentum update.
    - ``mode="minibatch"`` (Algorithm 2): after every ``every_n_iterations`` generator steps, the batch's
      images are matched to a random lattice subset of the same size (per class) with an ``m x m`` assignment.
      The batch images are read from ``engine.state.batch[assignment_key]``: when training uses random
      augmentation, put an un-augmented copy of the image under another key (e.g. ``CopyItemsd`` before the
      random transforms) and name it here.

    It fires :class:`~monai_neurosql.engines.AssignmentEvents` on the engine, leaves the last statistics in
    ``engine.state.assignment`` and ``engine.state.metrics["assignment_cost"]``/``["assignment_moved"]``, and
    logs cost, moved fraction and time through the engine's logger. Its ``state_dict`` holds the history, so
    ``CheckpointSaver`` keeps it and resumed runs continue it.

    Args:
        assignment_loader: loader over the training images yielding each index once (required for ``"full"``).
        mode: ``"full"`` or ``"minibatch"``.
        every_n_epochs: K, full mode. Default 2.
        every_n_iterations: minibatch mode. Default 1 (every step, as Algorithm 2).
        method: assignment method (:data:`~monai_neurosql.assignment.ASSIGNMENT_METHODS`). Default exact.
        momentum: ``rho`` of the momentum update. Default 0.7 (paper).
        cost: cost kind for the assignment (``"ssim_l1"``, or ``"l2"`` for the paper's ablation).
        cost_kwargs: extra :func:`pairwise_cost` settings (``max_bytes``, window...). With ``cost="ssim_l1"`` the
            window and weights default to those of the trainer's :class:`SSIML1Loss`, so the assignment
            minimizes exactly the training loss (Algorithm 1 uses the same ``l`` in both steps).
        decode_batch_size: batch size for ``G(Q)``.
        block_rows: cost rows per block in full mode.
        cache_images: keep the assignment images in memory after the first pass (they are deterministic).
        image_key, index_key, label_key: batch keys; ``assignment_key`` (minibatch): key of the un-augmented
            images, default ``image_key``.
        seed: seed of the lattice subsets in minibatch mode (re-seeded with ``seed + epoch`` each epoch, so
            resumed runs draw the same subsets).
        progress: progress bar over the cost rows in full mode.
        max_dense_bytes: largest dense cost matrix (full mode); above it each row keeps its ``candidates``
            cheapest lattice points and the assignment is solved sparsely with an optimality certificate
            (:func:`~monai_neurosql.assignment.sparse_certified_assignment`). Default 4 GiB.
        candidates: candidates per row on that sparse path. Default 128.
        name: logger name; default the engine's logger.

    Under ``torch.distributed`` the full assignment is global: pass each rank a shard of the training images
    (``DistributedSampler(shuffle=False)``); rows are gathered, rank 0 solves, the assignment is broadcast and
    every rank's bank gets the same update. In mini-batch mode each rank assigns its own batch and the updates
    are exchanged.
    """

    def __init__(
        self,
        assignment_loader: Iterable | None = None,
        mode: str = "full",
        every_n_epochs: int = 2,
        every_n_iterations: int = 1,
        method: str = "hungarian",
        momentum: float = 0.7,
        cost: str = "ssim_l1",
        cost_kwargs: Mapping[str, Any] | None = None,
        decode_batch_size: int = 256,
        block_rows: int = 1024,
        cache_images: bool = True,
        image_key: str = "image",
        index_key: str = "index",
        label_key: str = "label",
        assignment_key: str | None = None,
        seed: int = 0,
        progress: bool = False,
        max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
        candidates: int = 128,
        name: str | None = None,
    ) -> None:
        if mode not in ("full", "minibatch"):
            raise ValueError(f"mode must be 'full' or 'minibatch', got {mode!r}.")
        if mode == "full" and assignment_loader is None:
            raise ValueError("mode='full' needs an assignment_loader over the training images (no augmentation).")
        if every_n_epochs < 1 or every_n_iterations < 1:
            raise ValueError(f"every_n_epochs and every_n_iterations must be >= 1, got {every_n_epochs}, "
                             f"{every_n_iterations}.")
        if method not in ASSIGNMENT_METHODS:
            raise ValueError(f"method must be one of {ASSIGNMENT_METHODS}, got {method!r}.")
        if cost not in COST_KINDS:
            raise ValueError(f"cost must be one of {COST_KINDS}, got {cost!r}.")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}.")
        self.assignment_loader = assignment_loader
        self.mode = mode
        self.every_n_epochs = every_n_epochs
        self.every_n_iterations = every_n_iterations
        self.method = method
        self.momentum = momentum
        self.cost = cost
        self.cost_kwargs = dict(cost_kwargs or {})
        self.decode_batch_size = decode_batch_size
        self.block_rows = block_rows
        self.cache_images = cache_images
        self.image_key, self.index_key, self.label_key = image_key, index_key, label_key
        self.assignment_key = assignment_key or image_key
        self.seed = seed
        self.progress = progress
        self.max_dense_bytes = max_dense_bytes
        self.candidates = candidates
        self.logger = logging.getLogger(name)
        self._name = name
        self._images: tuple[torch.Tensor, torch.Tensor] | None = None
        self._rng = torch.Generator()
        self._epoch_stats: list[dict[str, float]] = []
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ ignite plumbing
    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (a :class:`NeuroSQLTrainer`): epoch-level (full) or iteration-level (minibatch)."""
        if self._name is None:
            self.logger = engine.logger
        if self.mode == "full":
            event = Events.EPOCH_COMPLETED(every=self.every_n_epochs)
            if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
                engine.add_event_handler(event, self)
        else:
            if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
                engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
                engine.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
                engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch)

    def __call__(self, engine: NeuroSQLTrainer) -> None:
        engine.fire_event(AssignmentEvents.ASSIGNMENT_STARTED)
        if self.mode == "full":
            stats = self._assign_full(engine)
        else:
            stats = self._assign_minibatch(engine)
        stats["epoch"] = float(engine.state.epoch)
        stats["iteration"] = float(engine.state.iteration)
        engine.state.assignment = stats
        engine.state.metrics["assignment_cost"] = stats["cost"]
        engine.state.metrics["assignment_moved"] = stats["moved"]
        if self.mode == "full":
            self.history.append(stats)
            self.logger.info(
                f"Epoch {engine.state.epoch}: quantile assignment ({'sparse certified auction' if stats['sparse'] else self.method}, "
                f"n={int(stats['n'])}): mean cost {stats['cost']:.4f}, {100 * stats['moved']:.1f}% codes moved, "
                f"{stats['seconds']:.2f} s "
                f"(G(Q) {stats['decode_seconds']:.2f} s, cost {stats['cost_seconds']:.2f} s, "
                f"solve {stats['solve_seconds']:.2f} s)"
            )
        else:
            self._epoch_stats.append(stats)
        engine.fire_event(AssignmentEvents.ASSIGNMENT_COMPLETED)

    # ------------------------------------------------------------------ the two modes
    def _assignment_images(self, engine: NeuroSQLTrainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is not None:
            return self._images
        images = collect_images(self.assignment_loader, engine.bank.n, self.image_key, self.index_key,
                                device=engine.state.device)
        if self.cache_images:
            self._images = images
        return images

    def _cost_kwargs(self, engine: NeuroSQLTrainer) -> dict[str, Any]:
        loss = getattr(engine, "loss_function", None)
        if self.cost == "ssim_l1" and isinstance(loss, SSIML1Loss):
            return {"loss": loss, **self.cost_kwargs}
        return self.cost_kwargs

    def _assign_full(self, engine: NeuroSQLTrainer) -> dict[str, float]:
        images, rows = self._assignment_images(engine)
        return assign_codes(
            engine.generator_module, engine.bank, images, rows=rows, conditional=engine.conditional,
            method=self.method, momentum=self.momentum, cost=self.cost, cost_kwargs=self._cost_kwargs(engine),
            decode_batch_size=self.decode_batch_size, block_rows=self.block_rows, progress=self.progress,
            max_dense_bytes=self.max_dense_bytes, candidates=self.candidates,
        )

    def _assign_minibatch(self, engine: NeuroSQLTrainer) -> dict[str, float]:
        batch = engine.state.batch
        if not isinstance(batch, Mapping) or self.assignment_key not in batch:
            raise KeyError(f"minibatch assignment reads engine.state.batch[{self.assignment_key!r}], which is missing.")
        images = batch[self.assignment_key]
        images = convert_to_tensor(images, track_meta=False, wrap_sequence=True)
        images = images.to(engine.state.device).float()
        rows = torch.as_tensor(batch[self.index_key]).long().reshape(-1)
        bank = engine.bank
        subset = []
        for g in torch.unique(bank.data_groups[rows.to(bank.data_groups.device)]).tolist():
            count = int((bank.data_groups[rows.to(bank.data_groups.device)] == g).sum())
            pool = bank.lattice_rows(g)
            subset.append(pool[torch.randperm(len(pool), generator=self._rng)[:count].to(pool.device)])
        return assign_codes(
            engine.generator_module, bank, images, rows=rows, lattice_subset=torch.cat(subset),
            conditional=engine.conditional, method=self.method, momentum=self.momentum, cost=self.cost,
            cost_kwargs=self._cost_kwargs(engine), decode_batch_size=self.decode_batch_size, block_rows=self.block_rows,
        )

    def _start_epoch(self, engine: Engine) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        # a different stream per rank and epoch: resumed runs draw the same subsets
        self._rng.manual_seed(int(self.seed) + int(engine.state.epoch) + 1_000_003 * rank)
        self._epoch_stats = []

    def _log_epoch(self, engine: Engine) -> None:
        if not self._epoch_stats:
            return
        n = sum(s["n"] for s in self._epoch_stats)
        summary = {
            "epoch": float(engine.state.epoch),
            "iteration": float(engine.state.iteration),
            "n": n,
            "cost": sum(s["cost"] * s["n"] for s in self._epoch_stats) / n,
            "moved": sum(s["moved"] * s["n"] for s in self._epoch_stats) / n,
        }
        for key in ("seconds", "decode_seconds", "cost_seconds", "solve_seconds"):
            summary[key] = sum(s[key] for s in self._epoch_stats)
        self.history.append(summary)
        engine.state.metrics["assignment_cost"] = summary["cost"]
        engine.state.metrics["assignment_moved"] = summary["moved"]
        self.logger.info(
            f"Epoch {engine.state.epoch}: {len(self._epoch_stats)} mini-batch assignments ({self.method}): "
            f"mean cost {summary['cost']:.4f}, {100 * summary['moved']:.1f}% codes moved, "
            f"{summary['seconds']:.2f} s in assignment"
        )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """History of the assignments (plain floats, loadable with ``weights_only=True``)."""
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]

"""The quantile-assignment step of NeuroSQL as an ignite/MONAI handler (Algorithms 1 and 2).

Length: one handler: when to assign (full batch every K epochs with the adaptive interval, or per mini-batch),
on which images, and its resumable state; how one assignment is computed lives in ``monai_neurosql.assignment``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events
from monai.utils import convert_to_tensor

from ..assignment import ASSIGNMENT_COST, AssignmentSettings, assign_codes, collect_images
from ..distributed import broadcast, gather_rows, world
from ..engines.events import AssignmentEvents
from ..latent_bank import group_positions

if TYPE_CHECKING:
    from ..engines.neurosql_trainer import NeuroSQLTrainer

__all__ = ["QuantileAssignmentHandler"]

#: The ``engine.state.metrics`` keys the handler sets in epochs with an assignment.
METRIC_NAMES = ("assignment_cost", "assignment_moved")

#: Starts the handler can give the codes before the first epoch (``None``: keep the bank's own start).
INITS = (None, "pca")


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

    How each assignment is computed (solver, momentum, cost, memory bounds) is one
    :class:`~monai_neurosql.assignment.AssignmentSettings`; with ``cost="ssim_l1"`` and no ``loss`` in it, the cost
    is the trainer's :class:`~monai_neurosql.SSIML1Loss`, so the assignment minimizes exactly the training loss
    (Algorithm 1 uses the same ``l`` in both steps).

    It fires :class:`~monai_neurosql.engines.AssignmentEvents` on the engine, leaves the last statistics in
    ``engine.state.assignment``, and logs cost, moved fraction and time through the engine's logger. The metrics
    ``engine.state.metrics["assignment_cost"]``/``["assignment_moved"]`` exist only in epochs with an assignment
    (they are removed when the next epoch starts), so epoch-level ``StatsHandler``/``TensorBoardStatsHandler``
    report them once per assignment, not again in the epochs between. Its ``state_dict`` holds the history, so
    ``CheckpointSaver`` keeps it and resumed runs continue it.

    Args:
        assignment_loader: loader over the training images yielding each index once (required for ``"full"``
            and for ``init="pca"``).
        mode: ``"full"`` or ``"minibatch"``.
        every_n_epochs: K, full mode. Default 2.
        min_moved: adaptive schedule (full mode): when an assignment moves fewer than this fraction of the codes,
            the interval to the next one doubles (up to ``max_every_n_epochs``); when one moves at least this
            fraction, it returns to ``every_n_epochs``. Late in training the assignment often moves almost no
            code, and each one costs a decode of the whole lattice. ``0.0`` (default): off, an assignment every
            ``every_n_epochs`` epochs (the paper). The bundles use ``0.05``.
        max_every_n_epochs: the longest interval of the adaptive schedule, in epochs (``>= every_n_epochs``).
            Default ``None``: ``4 * every_n_epochs``.
        every_n_iterations: minibatch mode. Default 1 (every step, as Algorithm 2).
        settings: :class:`~monai_neurosql.assignment.AssignmentSettings` or a dict of its fields (bundle JSON),
            e.g. ``{"method": "greedy", "momentum": 0.7}``. Default: the defaults (exact solver, ``rho = 0.7``).
        init: ``"pca"``: when the first epoch starts, give the codes the PCA-sorted start of Algorithm 1 line 2
            (:meth:`~monai_neurosql.LatentBank.init_pca` on the assignment images); a resumed run keeps its
            codes. ``None`` (default): keep the bank's start (random permutation).
        cache_images: keep the assignment images in memory after the first pass (they are deterministic).
        image_key, index_key: batch keys; ``assignment_key`` (minibatch): key of the un-augmented images,
            default ``image_key``.
        seed: seed of the lattice subsets in minibatch mode (re-seeded with ``seed + epoch`` each epoch, so
            resumed runs draw the same subsets).
        name: logger name; default the engine's logger.

    Under ``torch.distributed`` the full assignment is global: pass each rank a shard of the training images
    (``DistributedSampler(shuffle=False)``); rows are gathered, rank 0 solves, the assignment is broadcast and
    every rank's bank gets the same update. In mini-batch mode each rank assigns its own batch and the updates
    are exchanged.

    Example::

        handler = QuantileAssignmentHandler(assignment_loader(dataset), every_n_epochs=2,
                                            settings={"method": "hungarian", "momentum": 0.7}, init="pca")
        trainer = NeuroSQLTrainer(..., train_handlers=[handler])
    """

    def __init__(
        self,
        assignment_loader: Iterable | None = None,
        mode: str = "full",
        every_n_epochs: int = 2,
        every_n_iterations: int = 1,
        min_moved: float = 0.0,
        max_every_n_epochs: int | None = None,
        settings: AssignmentSettings | Mapping[str, Any] | None = None,
        init: str | None = None,
        cache_images: bool = True,
        image_key: str = "image",
        index_key: str = "index",
        assignment_key: str | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if mode not in ("full", "minibatch"):
            raise ValueError(f"mode must be 'full' or 'minibatch', got {mode!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}.")
        if assignment_loader is None and (mode == "full" or init == "pca"):
            raise ValueError(f"mode={mode!r} with init={init!r} needs an assignment_loader over the training images "
                             "(no augmentation).")
        if every_n_epochs < 1 or every_n_iterations < 1:
            raise ValueError(f"every_n_epochs and every_n_iterations must be >= 1, got {every_n_epochs}, "
                             f"{every_n_iterations}.")
        if not 0.0 <= min_moved <= 1.0:
            raise ValueError(f"min_moved is a fraction of the codes in [0, 1] (0 turns the adaptive schedule off), "
                             f"got {min_moved}.")
        max_every = 4 * every_n_epochs if max_every_n_epochs is None else max_every_n_epochs
        if max_every < every_n_epochs:
            raise ValueError(f"max_every_n_epochs must be >= every_n_epochs ({every_n_epochs}), got {max_every}.")
        self.assignment_loader = assignment_loader
        self.mode = mode
        self.every_n_epochs = every_n_epochs
        self.min_moved = float(min_moved)
        self.max_every_n_epochs = int(max_every)
        self.interval = every_n_epochs  # epochs from the last full assignment to the next (adaptive schedule)
        self.every_n_iterations = every_n_iterations
        self.settings = AssignmentSettings.coerce(settings).with_default_cost(ASSIGNMENT_COST)
        self.init = init
        self.cache_images = cache_images
        self.image_key, self.index_key = image_key, index_key
        self.assignment_key = assignment_key or image_key
        self.seed = seed
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
        if not engine.has_event_handler(self._forget_metrics, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._forget_metrics)
        if self.init == "pca" and not engine.has_event_handler(self._start_from_pca, Events.EPOCH_STARTED):
            # epoch 1 only: a run resumed from a checkpoint starts at a later epoch and keeps its codes
            engine.add_event_handler(Events.EPOCH_STARTED(once=1), self._start_from_pca)
        if self.mode == "full":
            if not engine.has_event_handler(self._epoch_completed, Events.EPOCH_COMPLETED):
                engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        elif not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
            engine.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch)

    def _epoch_completed(self, engine: NeuroSQLTrainer) -> None:
        epoch = engine.state.epoch
        if self.min_moved <= 0.0:  # fixed schedule: every multiple of K, as Events.EPOCH_COMPLETED(every=K)
            due = epoch % self.every_n_epochs == 0
        else:  # adaptive: the interval after the last full assignment (epoch 0: none yet)
            due = epoch - (int(self.history[-1]["epoch"]) if self.history else 0) >= self.interval
        if due:
            self(engine)

    def _adapt(self, engine: Engine, moved: float) -> None:
        """The adaptive schedule: double the interval after an assignment that moved fewer than ``min_moved``."""
        if self.min_moved <= 0.0:
            return
        interval = self.every_n_epochs if moved >= self.min_moved else min(2 * self.interval,
                                                                              self.max_every_n_epochs)
        if interval != self.interval:
            self.logger.info(
                f"Epoch {engine.state.epoch}: {100 * moved:.1f}% codes moved ("
                f"{'>=' if moved >= self.min_moved else '<'} min_moved {100 * self.min_moved:.1f}%): next "
                f"assignment in {interval} epochs (was {self.interval})")
        self.interval = interval

    def __call__(self, engine: NeuroSQLTrainer) -> None:
        engine.fire_event(AssignmentEvents.ASSIGNMENT_STARTED)
        stats = self._assign_full(engine) if self.mode == "full" else self._assign_minibatch(engine)
        stats["epoch"] = float(engine.state.epoch)
        stats["iteration"] = float(engine.state.iteration)
        engine.state.assignment = stats
        if self.mode == "full":
            engine.state.metrics.update(dict(zip(METRIC_NAMES, (stats["cost"], stats["moved"]))))
            self.history.append(stats)
            self._adapt(engine, stats["moved"])
            solver = "sparse certified auction" if stats["sparse"] else self.settings.method
            self.logger.info(
                f"Epoch {engine.state.epoch}: quantile assignment ({solver}, n={int(stats['n'])}): mean cost "
                f"{stats['cost']:.4f}, {100 * stats['moved']:.1f}% codes moved, {stats['seconds']:.2f} s "
                f"(G(Q) {stats['decode_seconds']:.2f} s, cost {stats['cost_seconds']:.2f} s, "
                f"solve {stats['solve_seconds']:.2f} s)"
            )
        else:
            self._epoch_stats.append(stats)
        engine.fire_event(AssignmentEvents.ASSIGNMENT_COMPLETED)

    @staticmethod
    def _forget_metrics(engine: Engine) -> None:
        # the last assignment's numbers are not this epoch's: metric handlers must not report them again
        for key in METRIC_NAMES:
            engine.state.metrics.pop(key, None)

    # ------------------------------------------------------------------ the start and the two modes
    def _assignment_images(self, engine: NeuroSQLTrainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is not None:
            return self._images
        images = collect_images(self.assignment_loader, engine.bank.n, self.image_key, self.index_key,
                                device=engine.state.device)
        if self.cache_images:
            self._images = images
        return images

    def _settings(self, engine: NeuroSQLTrainer) -> AssignmentSettings:
        return self.settings.with_loss(getattr(engine, "loss_function", None))

    def _start_from_pca(self, engine: NeuroSQLTrainer) -> None:
        images, rows = self._assignment_images(engine)
        rows, images = gather_rows(images, rows)  # under DDP: every rank's shard, in index order
        bank = engine.bank
        bank.init_pca(images)
        # every rank computed the same start; rank 0's copy makes the banks identical to the last bit
        bank.assignment.copy_(broadcast(bank.assignment))
        bank.codes.copy_(broadcast(bank.codes))
        self.logger.info(f"Epoch {engine.state.epoch}: codes start PCA-sorted (n={len(rows)}, d={bank.dim})")

    def _assign_full(self, engine: NeuroSQLTrainer) -> dict[str, float]:
        images, rows = self._assignment_images(engine)
        return assign_codes(engine.generator_module, engine.bank, images, rows=rows, conditional=engine.conditional,
                            settings=self._settings(engine))

    def _assign_minibatch(self, engine: NeuroSQLTrainer) -> dict[str, float]:
        batch = engine.state.batch
        if not isinstance(batch, Mapping) or self.assignment_key not in batch:
            raise KeyError(f"minibatch assignment reads engine.state.batch[{self.assignment_key!r}], which is missing.")
        images = convert_to_tensor(batch[self.assignment_key], track_meta=False, wrap_sequence=True)
        images = images.to(engine.state.device).float()
        rows = torch.as_tensor(batch[self.index_key]).long().reshape(-1)
        bank = engine.bank
        subset = []
        for g, positions in group_positions(bank.data_groups[rows.to(bank.data_groups.device)]):
            pool = bank.lattice_rows(g)
            subset.append(pool[torch.randperm(len(pool), generator=self._rng)[: len(positions)].to(pool.device)])
        # the progress bar is for the long full passes, not for every mini-batch
        settings = dataclasses.replace(self._settings(engine), progress=False)
        return assign_codes(engine.generator_module, bank, images, rows=rows, lattice_subset=torch.cat(subset),
                            conditional=engine.conditional, settings=settings)

    def _start_epoch(self, engine: Engine) -> None:
        # a different stream per rank and epoch: resumed runs draw the same subsets
        self._rng.manual_seed(int(self.seed) + int(engine.state.epoch) + 1_000_003 * world()[1])
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
        engine.state.metrics.update(dict(zip(METRIC_NAMES, (summary["cost"], summary["moved"]))))
        self.logger.info(
            f"Epoch {engine.state.epoch}: {len(self._epoch_stats)} mini-batch assignments ({self.settings.method}): "
            f"mean cost {summary['cost']:.4f}, {100 * summary['moved']:.1f}% codes moved, "
            f"{summary['seconds']:.2f} s in assignment"
        )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """History of the assignments and the adaptive schedule's interval (plain values, loadable with
        ``weights_only=True``), so that a resumed run assigns at the same epochs."""
        return {"history": [dict(h) for h in self.history], "interval": int(self.interval)}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        # checkpoints from before the adaptive schedule have no interval: the fixed one
        self.interval = int(state_dict.get("interval", self.every_n_epochs))

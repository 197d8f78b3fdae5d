"""Stop a NeuroSQL run whose generator diverged or stopped learning, before it writes another checkpoint."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..engines.events import AssignmentEvents
from ..generate import generate

__all__ = ["DivergenceGuard", "TrainingDivergedError"]

_ADVICE = (
    "Checkpoints written before this epoch are left as they were (model.pt, if any, is the last good epoch). Try a 10x lower "
    "learning_rate, keep grad_clip_norm set, and start a new run (another models folder, or resume=False)."
)


class TrainingDivergedError(RuntimeError):
    """The generator diverged (non-finite or exploding weights or outputs, constant or saturated outputs)."""


class DivergenceGuard:
    """Checks a :class:`~monai_neurosql.engines.NeuroSQLTrainer` for divergence and stalls, and stops it.

    - Every iteration: the generator output of the batch is finite.
    - Every ``every_n_epochs`` epochs: the generator's parameters and buffers are finite and no parameter exceeds
      ``max_abs_weight`` in absolute value; ``num_probe`` samples (fixed seed, eval mode) are finite, within
      ``max_abs_output``, not constant, and not saturated (at most ``max_saturated`` of their values sit at the
      probe's minimum or maximum: a sigmoid generator pushed to 0/1 everywhere has stopped learning); the
      validation metric ``metric_name`` (when present) is finite.
    - Stall: when ``metric_name`` has not improved by more than ``min_delta`` (relative, cumulative as in ignite's
      ``EarlyStopping``) for ``stall_assignments`` assignment rounds (a full assignment, or an epoch of mini-batch
      assignments), the run is stopped with ``engine.terminate()`` and a warning; the best model is kept.

    Divergence raises :class:`TrainingDivergedError` with what happened and what to try. Raised inside
    ``EPOCH_COMPLETED``, it stops the handlers after it, so attach the guard after the validation handler and
    before the checkpoint saver: the diverged epoch then never becomes ``best.pt`` and never overwrites
    ``model.pt``. Its state (best metric, stall count) goes in the checkpoint, so a resumed run counts on.

    Args:
        max_abs_weight: largest absolute parameter value. Default ``1e3`` (trained generators stay far below 10).
        max_abs_output: largest absolute output value. Default ``1e3`` (images are in ``[0, 1]``).
        max_saturated: largest share of probe values at the probe's extremes; ``None`` skips the check.
            Default 0.999.
        num_probe: samples decoded for the output checks. Default 16.
        seed: probe seed.
        metric_name: validation metric (lower is better) in ``engine.state.metrics``.
        stall_assignments: assignment rounds without improvement before stopping; ``None`` never stops on a
            stall. Default 10.
        min_delta: relative improvement that counts. Default ``1e-3``.
        every_n_epochs: how often the epoch-level checks run. Default 1.
        name: logger name; default the engine's logger.

    Raises:
        ValueError: non-positive limits or counts.

    Example::

        guard = DivergenceGuard(stall_assignments=10)
        trainer = NeuroSQLTrainer(..., train_handlers=[assignment, validation, guard])
        AtomicCheckpointSaver("models", {..., "guard": guard}, save_interval=1).attach(trainer)  # after the guard
    """

    def __init__(
        self,
        max_abs_weight: float = 1e3,
        max_abs_output: float = 1e3,
        max_saturated: float | None = 0.999,
        num_probe: int = 16,
        seed: int = 0,
        metric_name: str = "val_assignment_cost",
        stall_assignments: int | None = 10,
        min_delta: float = 1e-3,
        every_n_epochs: int = 1,
        name: str | None = None,
    ) -> None:
        if max_abs_weight <= 0 or max_abs_output <= 0:
            raise ValueError(f"max_abs_weight and max_abs_output must be positive, got {max_abs_weight}, "
                             f"{max_abs_output}.")
        if max_saturated is not None and not 0 < max_saturated <= 1:
            raise ValueError(f"max_saturated must lie in (0, 1] or be None, got {max_saturated}.")
        if num_probe < 2 or every_n_epochs < 1 or (stall_assignments is not None and stall_assignments < 1):
            raise ValueError(f"num_probe must be >= 2, every_n_epochs and stall_assignments >= 1; got {num_probe}, "
                             f"{every_n_epochs}, {stall_assignments}.")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}.")
        self.max_abs_weight = float(max_abs_weight)
        self.max_abs_output = float(max_abs_output)
        self.max_saturated = max_saturated
        self.num_probe = num_probe
        self.seed = seed
        self.metric_name = metric_name
        self.stall_assignments = stall_assignments
        self.min_delta = float(min_delta)
        self.every_n_epochs = every_n_epochs
        self.logger = logging.getLogger(name)
        self._name = name
        self.best: float | None = None
        self.best_epoch = 0
        self.rounds_since_best = 0
        self.stopped: str | None = None
        self._pending_rounds = 0
        self._round_epoch = -1

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        if engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_output)
        if engine.has_registered_events(AssignmentEvents.ASSIGNMENT_COMPLETED):
            engine.add_event_handler(AssignmentEvents.ASSIGNMENT_COMPLETED, self._assignment_done)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)

    # ------------------------------------------------------------------ checks
    def _diverged(self, engine: Engine, what: str) -> TrainingDivergedError:
        message = f"training diverged at epoch {engine.state.epoch}: {what}. {_ADVICE}"
        self.logger.error(message)
        return TrainingDivergedError(message)

    def check_output(self, engine: Engine) -> None:
        """Every iteration: the batch's generator output is finite."""
        output = engine.state.output
        pred = output.get("pred") if isinstance(output, Mapping) else None
        if isinstance(pred, torch.Tensor) and not bool(torch.isfinite(pred).all()):
            raise self._diverged(engine, f"the generator output became non-finite at iteration {engine.state.iteration}")

    def _assignment_done(self, engine: Engine) -> None:
        if engine.state.epoch != self._round_epoch:  # one round per epoch with assignments (mini-batch: many)
            self._round_epoch = int(engine.state.epoch)
            self._pending_rounds += 1

    def __call__(self, engine: Engine) -> None:
        generator = getattr(engine, "generator_module", getattr(engine, "generator", None))
        if generator is None:
            raise TypeError("DivergenceGuard needs an engine with a generator (a NeuroSQLTrainer).")
        self.check_weights(engine, generator)
        self.check_samples(engine, generator)
        self.check_metric(engine)

    def check_weights(self, engine: Engine, generator: torch.nn.Module) -> None:
        """Parameters and buffers finite, parameters within ``max_abs_weight``."""
        for name, tensor in [*generator.named_parameters(), *generator.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise self._diverged(engine, f"the generator's {name!r} holds NaN or infinite values")
        largest, where = 0.0, ""
        for name, param in generator.named_parameters():
            value = float(param.detach().abs().max()) if param.numel() else 0.0
            if value > largest:
                largest, where = value, name
        if largest > self.max_abs_weight:
            raise self._diverged(engine, f"the generator's weights exploded (|{where}| reached {largest:.3g}, limit "
                                         f"{self.max_abs_weight:.3g})")

    def check_samples(self, engine: Engine, generator: torch.nn.Module) -> None:
        """Probe samples finite, bounded, not constant and not saturated."""
        bank = getattr(engine, "bank", None)
        if bank is None:
            return
        num_classes = getattr(generator, "num_classes", None)
        labels = (torch.arange(self.num_probe) % num_classes).tolist() if num_classes else None
        images = generate(generator, self.num_probe, bank.lattice, seed=self.seed, labels=labels)
        if not bool(torch.isfinite(images).all()):
            raise self._diverged(engine, "the generator's samples hold NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if max(abs(low), abs(high)) > self.max_abs_output:
            raise self._diverged(engine, f"the generator's samples exploded (values in [{low:.3g}, {high:.3g}], limit "
                                         f"{self.max_abs_output:.3g})")
        span = high - low
        if span <= 1e-6:
            raise self._diverged(engine, f"the generator's samples are constant (every pixel of {self.num_probe} "
                                         f"samples = {low:.4g})")
        if self.max_saturated is not None:
            tol = 1e-6 * max(span, 1.0)
            saturated = float(((images - low).abs() <= tol).logical_or((images - high).abs() <= tol).float().mean())
            if saturated > self.max_saturated:
                raise self._diverged(engine, f"the generator's samples are saturated ({100 * saturated:.2f}% of the "
                                             f"values sit at {low:.3g} or {high:.3g})")

    def check_metric(self, engine: Engine) -> None:
        """Validation metric finite; stop the run after ``stall_assignments`` rounds without improvement."""
        rounds, self._pending_rounds = self._pending_rounds, 0
        value = engine.state.metrics.get(self.metric_name)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            raise self._diverged(engine, f"{self.metric_name} became {value}")
        if self.best is None or value < self.best * (1.0 - self.min_delta) - 1e-12:
            self.best, self.best_epoch, self.rounds_since_best = value, int(engine.state.epoch), 0
            return
        self.rounds_since_best += rounds
        if self.stall_assignments is not None and self.rounds_since_best >= self.stall_assignments:
            self.stopped = (
                f"training stopped at epoch {engine.state.epoch}: {self.metric_name} has not improved by more than "
                f"{100 * self.min_delta:.2g}% for {self.rounds_since_best} assignment rounds (best {self.best:.4f} "
                f"at epoch {self.best_epoch}, now {value:.4f}). The best model is kept. If the cost was flat from the "
                "start, the learning rate is probably too high or too low; otherwise the model has converged."
            )
            self.logger.warning(self.stopped)
            engine.terminate()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Best metric, its epoch and the stall count (plain Python values)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "rounds_since_best": self.rounds_since_best,
                "stopped": self.stopped}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_epoch = int(state_dict.get("best_epoch", 0))
        self.rounds_since_best = int(state_dict.get("rounds_since_best", 0))
        self.stopped = state_dict.get("stopped")

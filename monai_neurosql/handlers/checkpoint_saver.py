"""Checkpoints written atomically by ignite's ``DiskSaver``, carrying the best-model bookkeeping and the run status.

Length: one handler; a quarter of it is docstring, the rest the resume bookkeeping (best model, status,
stale temporary files) that must live beside the saving to stay atomic.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

__all__ = ["AtomicCheckpointSaver"]

# ignite's atomic DiskSaver writes to tempfile.NamedTemporaryFile(dir=save_dir) ("tmp" + 8 characters) and renames
# it; releases before 0.2 wrote ".<name>.<8 characters>.tmp". A kill mid-write leaves one of these behind.
_STALE_TEMP = (re.compile(r"^tmp[a-z0-9_]{8}$"), re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$"))
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes zip archives


def _is_stale_temp(path: Path) -> bool:
    if not path.is_file() or not any(p.match(path.name) for p in _STALE_TEMP):
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return head == _ZIP_MAGIC[: len(head)]  # empty, or the start of a torch.save archive


class _FixedNameDiskSaver(DiskSaver):
    """ignite's atomic ``DiskSaver`` (temporary file, then ``os.replace``; group/other read permission added) that
    writes every checkpoint to one fixed file name when ``filename`` is set."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        # ignite removes the file it replaces before writing the new one; with a fixed name the atomic replace does
        # that, and removing first would leave a moment with no checkpoint at all
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver:
    """Saves checkpoints during training: every ``save_interval`` epochs (or iterations), and whenever the key metric
    improves; every file is written atomically by ignite's ``DiskSaver(atomic=True)``, so a crash or a kill
    mid-write leaves the previous file intact.

    The arguments follow :class:`monai.handlers.CheckpointSaver`; the differences:

    - ``interval_filename``: a fixed name for the interval checkpoints (e.g. ``"model.pt"``, always the latest),
      where MONAI names them ``checkpoint_epoch=N.pt``.
    - The interval checkpoint also holds this saver's own state under ``"checkpointer"`` (MONAI's key for it):
      the best-model bookkeeping (key metric, its epoch) and whether the run has finished. Resume with
      :class:`monai.handlers.CheckpointLoader` given ``{**save_dict, "checkpointer": saver}``, and the best model of
      the first part of the run stays the best model unless the resumed part beats it.
    - A non-finite key metric (a diverged model) never becomes the best model.
    - At the end of the run (``Events.COMPLETED``: last epoch, early stopping or any ``terminate()``) the interval
      checkpoint is written once more, marked finished; :meth:`finished_run` reads that mark, so a bundle can tell
      a finished run from an interrupted one before doing any work.
    - Temporary files left by a killed writer (ignite's ``tmpXXXXXXXX`` holding a partial ``torch.save``, and the
      ``.<name>.XXXXXXXX.tmp`` files of earlier releases) are removed from ``save_dir`` when the saver is attached.

    Attach it after the handlers that compute the key metric or stop the run (validation, ``EarlyStopping``,
    :class:`~monai_neurosql.handlers.DivergenceGuard`), so that each checkpoint holds their state of the same epoch.
    Under DDP attach it on every rank; only rank 0 writes.

    Args:
        save_dir: folder of the checkpoint files (created if needed).
        save_dict: objects with ``state_dict``/``load_state_dict`` to save, e.g. ``{"generator": G, "optimizer":
            opt, "bank": bank, "trainer": trainer, "early_stop": early_stop}``. The key ``"checkpointer"`` is
            reserved.
        name: logger name; default the engine's logger.
        file_prefix: prefix of generated file names.
        save_interval: save every N epochs (or iterations); 0 saves no interval checkpoints.
        save_interval_seconds: and only when at least this many seconds have passed since the last interval
            checkpoint (0: no minimum): with epochs of a second, ``save_interval=1, save_interval_seconds=60``
            saves about once a minute at an epoch end. The end-of-run write is always made.
        interval_filename: fixed file name of the interval checkpoint; ``None`` names them by epoch/iteration.
        n_saved: how many interval checkpoints with generated names to keep; ``None`` keeps all.
        epoch_level: ``save_interval`` counts epochs (``True``) or iterations.
        save_key_metric: also save the model whenever ``key_metric_name`` improves.
        key_metric_name: key in ``engine.state.metrics``.
        key_metric_filename: fixed file name of the best model (e.g. ``"best.pt"``); needs ``key_metric_n_saved=1``.
        key_metric_n_saved: how many best models to keep.
        key_metric_negative_sign: lower is better (a loss or a cost).
        key_metric_greater_or_equal: an equal score replaces the saved best model.

    Raises:
        ValueError: empty ``save_dict``, ``"checkpointer"`` in it, a negative ``save_interval``, a fixed best-model
            name with ``key_metric_n_saved > 1``, or ``save_key_metric`` without ``key_metric_name``.

    Example::

        saver = AtomicCheckpointSaver(
            "models", {"generator": G, "optimizer": opt, "bank": bank, "trainer": trainer, "early_stop": stop},
            save_interval=1, interval_filename="model.pt",
            save_key_metric=True, key_metric_name="val_assignment_cost", key_metric_negative_sign=True,
            key_metric_filename="best.pt",
        )
        saver.attach(trainer)
        # resuming: CheckpointLoader("models/model.pt", {**saver.save_dict, "checkpointer": saver})(trainer)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        name: str | None = None,
        file_prefix: str = "",
        save_interval: int = 0,
        save_interval_seconds: float = 0.0,
        interval_filename: str | None = None,
        n_saved: int | None = None,
        epoch_level: bool = True,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_filename: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_negative_sign: bool = False,
        key_metric_greater_or_equal: bool = False,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict is empty: give the objects to save, e.g. {'generator': net, 'trainer': trainer}.")
        if "checkpointer" in save_dict:
            raise ValueError("the key 'checkpointer' of save_dict is reserved for the saver's own state; rename it.")
        if save_interval < 0:
            raise ValueError(f"save_interval must be >= 0, got {save_interval}.")
        if not save_interval_seconds >= 0:
            raise ValueError(f"save_interval_seconds must be >= 0, got {save_interval_seconds}.")
        if save_key_metric and not key_metric_name:
            raise ValueError("save_key_metric=True needs key_metric_name (a key of engine.state.metrics).")
        if key_metric_filename is not None and key_metric_n_saved != 1:
            raise ValueError(f"a fixed best-model file name ({key_metric_filename!r}) keeps one model; got "
                             f"key_metric_n_saved={key_metric_n_saved}.")
        self.save_dir = Path(save_dir).expanduser()
        self.save_dict = dict(save_dict)
        self.logger = logging.getLogger(name)
        self._name = name
        self.save_interval = save_interval
        self.save_interval_seconds = float(save_interval_seconds)
        self._last_interval_save = -math.inf
        self.interval_filename = interval_filename
        self.epoch_level = epoch_level
        self.key_metric_name = key_metric_name
        self.key_metric_filename = key_metric_filename
        self._sign = -1.0 if key_metric_negative_sign else 1.0
        self.best: dict[str, float] | None = None  # {"value": metric, "epoch": epoch, "iteration": iteration}
        self.finished: dict[str, Any] | None = None
        self._key_metric_checkpoint: Checkpoint | None = None
        self._interval_checkpoint: Checkpoint | None = None
        if save_key_metric:
            self._key_metric_checkpoint = Checkpoint(
                to_save=self.save_dict,
                save_handler=_FixedNameDiskSaver(self.save_dir, key_metric_filename),
                filename_prefix=file_prefix,
                score_function=self._score,
                score_name="key_metric",
                n_saved=key_metric_n_saved,
                greater_or_equal=key_metric_greater_or_equal,
            )
        if save_interval > 0:
            self._interval_checkpoint = Checkpoint(
                to_save={**self.save_dict, "checkpointer": self},
                save_handler=_FixedNameDiskSaver(self.save_dir, interval_filename),
                filename_prefix=file_prefix,
                score_function=lambda engine: engine.state.epoch if self.epoch_level else engine.state.iteration,
                score_name="epoch" if epoch_level else "iteration",
                n_saved=n_saved,
                greater_or_equal=True,  # the end-of-run write repeats the last epoch's score
            )

    # ------------------------------------------------------------------ ignite plumbing
    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` and remove temporary files left in ``save_dir`` by a killed writer."""
        if self._name is None:
            self.logger = engine.logger
        if idist.get_rank() == 0:
            self.remove_stale_temporary_files()
        if self._key_metric_checkpoint is not None and not engine.has_event_handler(self.key_metric_completed):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.key_metric_completed)
        if self._interval_checkpoint is not None and not engine.has_event_handler(self.interval_completed):
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def remove_stale_temporary_files(self) -> list[Path]:
        """Delete the partial checkpoint files a killed writer left in ``save_dir``; returns their paths."""
        if not self.save_dir.is_dir():
            return []
        removed = []
        for path in sorted(self.save_dir.iterdir()):
            if _is_stale_temp(path):
                path.unlink(missing_ok=True)
                removed.append(path)
                self.logger.info(f"removed {path}, a partial checkpoint left by an interrupted write")
        return removed

    def _score(self, engine: Engine) -> float:
        return self._sign * float(engine.state.metrics[self.key_metric_name])

    def key_metric_completed(self, engine: Engine) -> None:
        """Save the best model when the key metric improved (skipped when it is missing or not finite)."""
        value = engine.state.metrics.get(self.key_metric_name)
        if value is None:
            return  # not computed this epoch (validation every few epochs)
        if not math.isfinite(float(value)):
            self.logger.warning(f"Epoch {engine.state.epoch}: {self.key_metric_name} = {value} is not finite; this "
                                "model is not saved as the best model.")
            return
        before = self._key_metric_checkpoint.state_dict()
        self._key_metric_checkpoint(engine)
        if self._key_metric_checkpoint.state_dict() != before:
            self.best = {"value": float(value), "epoch": int(engine.state.epoch),
                         "iteration": int(engine.state.iteration)}
            where = self.save_dir / (self.key_metric_filename or self._key_metric_checkpoint.last_checkpoint)
            self.logger.info(f"Epoch {engine.state.epoch}: best {self.key_metric_name} so far ({float(value):.4f}), "
                             f"saved {where}")

    def interval_completed(self, engine: Engine) -> None:
        """Save the interval checkpoint (unless the last one is younger than ``save_interval_seconds``)."""
        now = time.monotonic()
        if now - self._last_interval_save < self.save_interval_seconds:
            return
        self._last_interval_save = now
        self._interval_checkpoint(engine)
        step = f"epoch {engine.state.epoch}" if self.epoch_level else f"iteration {engine.state.iteration}"
        self.logger.info(f"Saved checkpoint at {step}")

    def started(self, engine: Engine) -> None:
        """A run (or a resumed part of one) starts: it is not finished until ``Events.COMPLETED``."""
        self.finished = None

    def completed(self, engine: Engine) -> None:
        """Mark the run finished and write the interval checkpoint with that mark."""
        max_epochs = engine.state.max_epochs
        self.finished = {
            "epoch": int(engine.state.epoch),
            "iteration": int(engine.state.iteration),
            "max_epochs": -1 if max_epochs is None else int(max_epochs),
            "stopped_early": bool(max_epochs is not None and engine.state.epoch < max_epochs),
        }
        self._interval_checkpoint(engine)
        path = self.save_dir / (self.interval_filename or self._interval_checkpoint.last_checkpoint)
        self.logger.info(f"Training finished at epoch {engine.state.epoch}; {path} is marked finished")

    # ------------------------------------------------------------------ state (the "checkpointer" entry)
    def state_dict(self) -> dict[str, Any]:
        """Best-model bookkeeping and run status (plain Python values, loadable with ``weights_only=True``)."""
        key_metric = None if self._key_metric_checkpoint is None else dict(self._key_metric_checkpoint.state_dict())
        return {"key_metric": key_metric, "best": self.best, "finished": self.finished}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (also accepts MONAI ``CheckpointSaver``'s ``{"_saved": ...}``)."""
        key_metric = state_dict.get("key_metric", state_dict if "_saved" in state_dict else None)
        if key_metric is not None and self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict(key_metric)
        self.best = state_dict.get("best")
        self.finished = state_dict.get("finished")

    # ------------------------------------------------------------------ before a run
    @staticmethod
    def finished_run(path: str | os.PathLike, max_epochs: int | None = None) -> str | None:
        """Why the run whose interval checkpoint is ``path`` needs no more training, or ``None`` to train.

        A run is finished when its checkpoint carries the finished mark of an early stop, or when it reached
        ``max_epochs`` (the current setting: raise it to train on). A missing file, or one written before this mark
        existed and short of ``max_epochs``, means "train".

        Returns:
            A one-line message naming the checkpoint, the stop epoch and the best model, or ``None``.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer = state.get("trainer", {})  # ignite saves the iteration and the epoch length
        epoch = int(trainer.get("epoch", int(trainer.get("iteration", 0)) // max(int(trainer.get("epoch_length", 1)), 1)))
        own = state.get("checkpointer") or {}
        finished = own.get("finished")
        best = own.get("best")
        if finished is not None and finished.get("stopped_early"):
            how = f"stopped early at epoch {finished['epoch']}"
        elif max_epochs is not None and epoch >= max_epochs:
            how = f"reached epoch {epoch} of {max_epochs}"
        else:
            return None
        best_text = f"; best model of epoch {best['epoch']} ({best['value']:.4f})" if best else ""
        return (f"training in {path.parent} already finished ({how}{best_text}); nothing to do. To train again, "
                "start a new run (another models folder, or resume=False); to train longer, raise num_epochs.")

    @staticmethod
    def exit_if_finished(path: str | os.PathLike, max_epochs: int | None = None) -> None:
        """For bundle configs, first in ``initialize``: when :meth:`finished_run` says the run in ``path`` is
        finished, log why and end the process with exit code 0 (``SystemExit(0)``) before any data is read, so a
        finished run is never trained on and its ``best.pt``, sample grids and ``data_info.json`` stay as they are."""
        message = AtomicCheckpointSaver.finished_run(path, max_epochs)
        if message is not None:
            logging.getLogger(__name__).info(message)
            raise SystemExit(0)

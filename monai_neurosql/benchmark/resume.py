"""A benchmark cell that continues after a kill: ``resume.pt`` holds everything its training needs (weights,
optimizers, schedules, the early-stopping state, the training clock, the random generators, the settings it was
started with), written atomically at epoch ends by :class:`~monai_neurosql.handlers.AtomicCheckpointSaver`."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..utils import DAMAGED_FILE_ERRORS

if TYPE_CHECKING:
    from ignite.handlers import Timer

__all__ = ["CellConfig", "RandomState", "TrainClock", "resumable"]

logger = logging.getLogger("monai_neurosql.benchmark.cells")
#: the saver's own lines ("Saved checkpoint at epoch N" every minute) would crowd the cells' progress log
_SAVER_LOGGER = "monai_neurosql.benchmark.resume"
logging.getLogger(_SAVER_LOGGER).setLevel(logging.WARNING)


class TrainClock:
    """Seconds of training so far, ``excluded()`` (evaluation, checkpoint writes) left out; continues across a resume.

    Load it after the objects whose seconds ``excluded()`` reads (the early-stopping state), so that a resumed
    clock subtracts only the time excluded after the resume.
    """

    def __init__(self, excluded: Callable[[], float]) -> None:
        self.excluded = excluded
        self.restart(0.0)

    def restart(self, seconds: float) -> None:
        self.offset, self.start, self.excluded_at_start = seconds, time.perf_counter(), self.excluded()

    def __call__(self) -> float:
        return self.offset + time.perf_counter() - self.start - (self.excluded() - self.excluded_at_start)

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self()}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.restart(float(state["seconds"]))


class RandomState:
    """The global random generators (torch, numpy, Python, and the CUDA one of ``device``) as plain tensors and
    numbers, so that a resumed baseline (whose noise comes from the global generators) draws what the uninterrupted
    run would have drawn."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def state_dict(self) -> dict[str, Any]:
        keys, pos, has_gauss, gauss = np.random.get_state()[1:]
        version, python, python_gauss = random.getstate()
        cuda = [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []
        return {"torch": torch.get_rng_state(), "cuda": cuda,
                "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
                "numpy_gauss": [int(has_gauss), float(gauss)],
                "python_version": version, "python": torch.tensor(python, dtype=torch.int64),
                "python_gauss": python_gauss}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"][0].cpu(), self.device)
        has_gauss, gauss = state["numpy_gauss"]
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
        random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                         state["python_gauss"]))


def _settings_that_train(cell: Mapping[str, Any]) -> tuple[str, ...]:
    """The settings a cell's training (and, early-stopped, its model selection) depends on."""
    protocol = cell.get("protocol", "epochs")
    keys = ["batch_size"]
    keys += {"epochs": ["epochs"], "wallclock": ["max_epochs", "wallclock_seconds"],
             "early_stop": ["max_epochs", "eval_every", "patience", "val_samples"]}.get(protocol, [])
    if cell["model"] == "vae":
        keys.append("vae_beta")
    if cell["model"] == "ddpm":
        keys += ["ddpm_timesteps"] + (["ddpm_sampling_steps"] if protocol == "early_stop" else [])
    return tuple(keys)


class CellConfig:
    """What a cell was trained with (the cell, the training images' count and shape, the settings its training depends
    on, and early-stopped the domain encoder that scores its validation samples), saved in its resume checkpoint;
    loading it checks that the current run has the same."""

    def __init__(self, path: Path, cell: Mapping[str, Any], settings: Mapping[str, Any],
                 images: torch.Tensor) -> None:
        self.path = path
        self.config = {**{k: str(v) for k, v in cell.items()}, "n_train": str(len(images)),
                       "image_shape": "x".join(str(s) for s in images.shape[1:]),
                       **{k: str(settings.get(k, "")) for k in _settings_that_train(cell)}}
        if cell.get("protocol") == "early_stop":
            digest = hashlib.sha256(Path(settings["encoder_path"]).read_bytes()).hexdigest()[:16]
            self.config["domain_encoder_sha256"] = digest

    def state_dict(self) -> dict[str, Any]:
        return dict(self.config)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        changed = {k: (state.get(k), v) for k, v in self.config.items() if state.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{self.path} holds this cell's training under other settings ({what}). Run with the "
                             "settings it was started with to continue it, or delete the file to train the cell "
                             "again from the start.")


def resumable(trainer, path: Path, state: Mapping[str, Any], every_seconds: float, writes: Timer,
              stopped: Callable[[], bool]) -> bool:
    """Write ``state`` (objects with ``state_dict``) to ``path`` atomically at an epoch end at most every
    ``every_seconds`` and when training ends, timing the writes in ``writes`` (a paused ignite ``Timer``, resumed
    around each write); if ``path`` exists, load it first, so that the interrupted training continues where it was
    saved (a damaged file is set aside as ``<path>.damaged`` and the training starts again, with a warning).

    Returns whether the loaded training had already ended: marked finished, or ``stopped()`` (at its last epoch or
    its early stop, cut between the epoch's write and the end-of-training one).
    """
    from ignite.engine import Events
    from ignite.handlers import Checkpoint

    from ..handlers import AtomicCheckpointSaver

    saver = AtomicCheckpointSaver(path.parent, state, name=_SAVER_LOGGER, save_interval=1,
                                  save_interval_seconds=every_seconds, interval_filename=path.name)
    finished = False
    checkpoint = None
    if path.is_file():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except DAMAGED_FILE_ERRORS as error:
            # a truncated or corrupted file: nothing in it can be continued
            damaged = path.with_name(path.name + ".damaged")
            path.replace(damaged)
            logger.warning(f"  {path} cannot be read ({type(error).__name__}: {error}); moved to {damaged}, training "
                           "the cell from the start")
    if checkpoint is not None:
        Checkpoint.load_objects({**state, "checkpointer": saver}, checkpoint)
        finished = saver.finished is not None or stopped()
        logger.info(f"  resuming from {path} (epoch {trainer.state.epoch}"
                    f"{', training finished' if finished else ''})")
    else:
        (path.parent / "samples.npz").unlink(missing_ok=True)  # an earlier training's samples
    for event in (Events.EPOCH_COMPLETED, Events.COMPLETED):
        trainer.add_event_handler(event, writes.resume)
    saver.attach(trainer)
    for event in (Events.EPOCH_COMPLETED, Events.COMPLETED):
        trainer.add_event_handler(event, writes.pause)
    return finished

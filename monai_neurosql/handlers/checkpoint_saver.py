"""MONAI's CheckpointSaver, writing every file atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver"]


class _AtomicDiskSaver(DiskSaver):
    """Write to a temporary file in the target folder, flush it to disk, then ``os.replace`` it into place.

    A crash mid-write leaves the previous checkpoint intact. Unlike ignite's ``atomic=True`` the file keeps the
    usual read permissions of the process umask (MONAI turned atomic writes off for that reason).
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:  # under DDP only one rank writes
            return
        filename = self.filename or filename
        path = os.path.join(self.dirname, filename)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=self.dirname)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def remove(self, filename: str) -> None:
        # ignite removes the file it replaces *before* writing the new one; with a fixed name the atomic
        # replace does the job, and removing first would leave a window with no checkpoint at all
        if self.filename is None and idist.get_rank() == self.save_on_rank:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` whose files are written atomically.

    Same arguments as MONAI's saver, plus ``interval_filename``: a fixed file name for the interval checkpoints
    (e.g. ``"model.pt"``, always the latest), where MONAI names them ``checkpoint_epoch=N.pt``. Load them with
    :class:`monai.handlers.CheckpointLoader` (``torch.load(..., weights_only=True)``).

    Under DDP attach it on every rank (ignite's distributed helpers it builds on expect all ranks to take part);
    only rank 0 writes.

    Example::

        saver = AtomicCheckpointSaver(
            save_dir="models", save_interval=1, interval_filename="model.pt",
            save_dict={"generator": G, "optimizer": opt, "bank": bank, "assignment": handler, "trainer": trainer},
        )
    """

    def __init__(self, *args, interval_filename: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for attr, fixed in (("_final_checkpoint", None), ("_key_metric_checkpoint", None),
                            ("_interval_checkpoint", interval_filename)):
            checkpoint = getattr(self, attr)
            if checkpoint is not None:
                old = checkpoint.save_handler
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, fixed or getattr(old, "filename", None))

"""AtomicCheckpointSaver: atomic writes through ignite, no leftovers after a kill, exact best-model bookkeeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping
from monai.handlers import CheckpointLoader

from monai_neurosql.handlers import AtomicCheckpointSaver

ROOT = Path(__file__).resolve().parents[2]


class Counter:
    """A stateful object whose state is the epoch at which it was saved."""

    def __init__(self) -> None:
        self.epoch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]


def _engine(costs: list[float], max_epochs: int, patience: int | None = None):
    """A 2-iteration-per-epoch engine whose validation cost at epoch e is ``costs[e - 1]``."""
    engine = Engine(lambda e, b: None)
    counter = Counter()

    @engine.on(Events.EPOCH_COMPLETED)
    def validate(e):
        counter.epoch = e.state.epoch
        e.state.metrics["val"] = costs[e.state.epoch - 1]

    save_dict = {"counter": counter, "trainer": engine}
    if patience is not None:
        stop = EarlyStopping(patience, lambda e: -e.state.metrics["val"], engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, stop)
        save_dict["early_stop"] = stop
    engine.state.max_epochs = max_epochs
    return engine, counter, save_dict


def _saver(path, save_dict, **kwargs):
    return AtomicCheckpointSaver(path, save_dict, save_interval=1, interval_filename="model.pt", save_key_metric=True,
                                 key_metric_name="val", key_metric_negative_sign=True, key_metric_filename="best.pt",
                                 **kwargs)


def _load(path):
    return torch.load(path, weights_only=True)


def test_files_are_whole_readable_and_no_temporary_file_remains(tmp_path, monkeypatch):
    engine, _, save_dict = _engine([0.5, 0.3], max_epochs=2)
    _saver(tmp_path, save_dict).attach(engine)
    old_umask = os.umask(0o022)
    try:
        engine.run([0, 1], max_epochs=2)
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.pt"]
    for name in ("best.pt", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644  # group and others may read, as MONAI intends
    # a failure in the middle of a write leaves the previous file and no temporary file
    before = (tmp_path / "model.pt").read_bytes()
    saver = _saver(tmp_path, save_dict)

    def broken_save(obj, f, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        saver.interval_completed(engine)
    assert (tmp_path / "model.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.pt"]


def test_stale_temporary_files_of_a_killed_writer_are_removed_at_start(tmp_path):
    (tmp_path / "tmpab12cd34").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # ignite's temporary name, partial zip
    (tmp_path / "tmpzz99yy88").write_bytes(b"")  # created, killed before the first byte
    (tmp_path / ".model.pt.k3j4h5g6.tmp").write_bytes(b"PK\x03")  # the pattern of the previous release
    keep = {"tmpnotes.txt": b"mine", "tmpqwertyui": b"not a checkpoint", "model.pt": b"PK\x03\x04"}
    for name, data in keep.items():
        (tmp_path / name).write_bytes(data)
    engine, _, save_dict = _engine([0.5], max_epochs=1)
    saver = _saver(tmp_path, save_dict)
    saver.attach(engine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    from ignite.engine import Engine
    from monai_neurosql.handlers import AtomicCheckpointSaver

    class Stall:
        # pickled inside torch.save, i.e. while the temporary file is open: tell the test, then wait to be killed
        def __reduce__(self):
            open(sys.argv[2], "w").close()
            time.sleep(60)
            return (int, ())

    class Obj:
        def __init__(self): self.stall = False
        def state_dict(self): return {"w": torch.ones(1000), **({"stall": Stall()} if self.stall else {})}
        def load_state_dict(self, state): pass

    obj = Obj()
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(sys.argv[1], {"obj": obj}, save_interval=1, interval_filename="model.pt")
    saver.attach(engine)
    engine.state.epoch = 1
    saver.interval_completed(engine)   # a good checkpoint
    obj.stall = True
    engine.state.epoch = 2
    saver.interval_completed(engine)   # killed in the middle of this one
    """
)


def test_kill_during_a_write_keeps_the_previous_checkpoint_and_the_next_start_cleans_up(tmp_path):
    script, marker, out = tmp_path / "writer.py", tmp_path / "writing", tmp_path / "models"
    script.write_text(_KILLED_WRITER)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before the stalled write"
            assert time.monotonic() < deadline, "the writer never reached the stalled write"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    leftovers = [p.name for p in out.iterdir() if p.name != "model.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith("tmp")  # what a kill leaves
    assert _load(out / "model.pt")["obj"]["w"].shape == (1000,)  # the previous checkpoint is whole
    engine, _, save_dict = _engine([0.5], max_epochs=1)
    AtomicCheckpointSaver(out, save_dict, save_interval=1, interval_filename="model.pt").attach(engine)
    assert [p.name for p in out.iterdir()] == ["model.pt"]


COSTS = [0.50, 0.30, 0.40, 0.45, 0.42, 0.41]


def test_resumed_run_keeps_the_best_model_and_the_early_stopping_state(tmp_path):
    # uninterrupted: the best is epoch 2 (0.30); patience 2 stops after epoch 4
    engine, _, save_dict = _engine(COSTS, max_epochs=6, patience=2)
    _saver(tmp_path / "a", save_dict).attach(engine)
    engine.run([0, 1], max_epochs=6)
    assert engine.state.epoch == 4
    assert _load(tmp_path / "a" / "best.pt")["counter"]["epoch"] == 2

    # interrupted after epoch 3 (a crash in epoch 4), then resumed from model.pt
    engine, _, save_dict = _engine(COSTS, max_epochs=6, patience=2)
    _saver(tmp_path / "b", save_dict).attach(engine)

    @engine.on(Events.EPOCH_STARTED(once=4))
    def crash(e):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run([0, 1], max_epochs=6)
    assert _load(tmp_path / "b" / "model.pt")["checkpointer"]["best"]["epoch"] == 2
    assert AtomicCheckpointSaver.finished_run(tmp_path / "b" / "model.pt", max_epochs=6) is None  # interrupted

    engine, _, save_dict = _engine(COSTS, max_epochs=6, patience=2)
    saver = _saver(tmp_path / "b", save_dict)
    CheckpointLoader(str(tmp_path / "b" / "model.pt"), {**save_dict, "checkpointer": saver})(engine)
    saver.attach(engine)
    engine.run([0, 1], max_epochs=6)
    assert engine.state.epoch == 4  # the restored early-stopping counter stops it where the uninterrupted run stopped
    assert _load(tmp_path / "b" / "best.pt")["counter"]["epoch"] == 2
    assert saver.best == {"value": 0.30, "epoch": 2, "iteration": 4}
    message = AtomicCheckpointSaver.finished_run(tmp_path / "b" / "model.pt", max_epochs=6)
    assert "stopped early at epoch 4" in message and "best model of epoch 2 (0.3000)" in message


def test_run_to_max_epochs_is_finished_until_max_epochs_grows(tmp_path):
    engine, _, save_dict = _engine([0.5, 0.4], max_epochs=2)
    _saver(tmp_path, save_dict).attach(engine)
    engine.run([0, 1], max_epochs=2)
    assert "reached epoch 2 of 2" in AtomicCheckpointSaver.finished_run(tmp_path / "model.pt", max_epochs=2)
    assert AtomicCheckpointSaver.finished_run(tmp_path / "model.pt", max_epochs=5) is None
    assert AtomicCheckpointSaver.finished_run(tmp_path / "missing.pt", max_epochs=5) is None


def test_a_non_finite_metric_never_becomes_the_best_model(tmp_path, caplog):
    engine, _, save_dict = _engine([float("nan"), 0.4, float("inf")], max_epochs=3)
    _saver(tmp_path, save_dict).attach(engine)
    with caplog.at_level("WARNING"):
        engine.run([0, 1], max_epochs=3)
    assert _load(tmp_path / "best.pt")["counter"]["epoch"] == 2
    assert sum("is not finite" in r.message for r in caplog.records) == 2


def test_save_interval_seconds_skips_epoch_ends_until_enough_time_passed_and_always_saves_the_end(tmp_path, monkeypatch):
    clock = iter([0.0, 10.0, 30.0, 61.0, 70.0, 125.0, 130.0])  # time.monotonic() at the end of epochs 1..7
    monkeypatch.setattr("monai_neurosql.handlers.checkpoint_saver.time.monotonic", lambda: next(clock))
    engine, _, save_dict = _engine([0.5] * 7, max_epochs=7)
    saved = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(_load(tmp_path / "model.pt")["counter"]
                                                                           ["epoch"]) if e.state.epoch > 1 else None)
    saver = AtomicCheckpointSaver(tmp_path, save_dict, save_interval=1, save_interval_seconds=60,
                                  interval_filename="model.pt")
    saver.attach(engine)
    engine.run([0, 1], max_epochs=7)
    # the handler above runs before the saver: it sees the file as of the previous epoch end
    assert saved == [1, 1, 1, 4, 4, 6]
    assert _load(tmp_path / "model.pt")["counter"]["epoch"] == 7  # the end of the run is always written
    assert _load(tmp_path / "model.pt")["checkpointer"]["finished"]["epoch"] == 7


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="save_dict is empty"):
        AtomicCheckpointSaver(tmp_path, {})
    with pytest.raises(ValueError, match="reserved"):
        AtomicCheckpointSaver(tmp_path, {"checkpointer": Counter()})
    with pytest.raises(ValueError, match="key_metric_name"):
        AtomicCheckpointSaver(tmp_path, {"c": Counter()}, save_key_metric=True)
    with pytest.raises(ValueError, match="keeps one model"):
        AtomicCheckpointSaver(tmp_path, {"c": Counter()}, save_key_metric=True, key_metric_name="v",
                              key_metric_filename="best.pt", key_metric_n_saved=2)
    with pytest.raises(ValueError, match="save_interval_seconds"):
        AtomicCheckpointSaver(tmp_path, {"c": Counter()}, save_interval=1, save_interval_seconds=-1)

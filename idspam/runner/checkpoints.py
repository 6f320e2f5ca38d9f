"""Small checkpoints and exact resume.

`checkpoints/last.ckpt`, written after every epoch, holds the trained tensors, optimizer and
scheduler state, the loop position, the results so far and the random number generators' states at
the end of the epoch, so a resumed run shuffles and drops out exactly as an uninterrupted one.
`checkpoints/best.ckpt` holds the trained tensors of the best epoch by the validation metric.
Neither holds a frozen backbone tensor. Every checkpoint is written to a temporary file in the same
folder, fsynced and renamed over the target (`AtomicCheckpointIO`), so a kill, or a second process
writing the same file, never leaves a half-written one. Checkpoints are read with
`torch.load(weights_only=True)`: plain tensors and containers only.

Preemption (SIGTERM, or the launcher's signal: submitit sends SIGUSR2): `StopOnSignal` lets the current
optimizer step finish, writes `last.ckpt` there (mid-epoch included: the data order, optimizer,
scheduler, loop and RNG states continue where they stopped) and stops the run with results.json
status `interrupted`. `checkpoint_every_n_steps=N` also writes it every N steps. `resume_plan` decides
what a job does with its run dir (resume=auto, and by default in a multirun): reuse a finished run,
resume an interrupted one, rerun a failed one, refuse one of another configuration. `RunLock` (an
flock the kernel drops when the process dies) keeps two processes out of one run dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from ..errors import DiskFull, UserError, disk_full, no_space  # noqa: F401 - re-exported: the runner's names
from ..files import atomic_write

log = logging.getLogger("idspam")

def rng_state() -> dict:
    """Every generator the training loop draws from, in weights_only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def checkpoint_callbacks(folder: Path, monitor: str, mode: str) -> list[ModelCheckpoint]:
    """`last.ckpt` after every epoch (everything a resume needs) and `best.ckpt` with the trained
    tensors of the best epoch by the validation metric (the first best on ties)."""
    common = dict(dirpath=folder, save_top_k=1, save_on_train_epoch_end=True, auto_insert_metric_name=False,
                  enable_version_counter=False)
    # `best` first: the epoch's last.ckpt then holds the best-so-far it has just updated (else a run resumed from
    # an epoch end would take its next epoch for the best one, and export that epoch's adapter)
    return [ModelCheckpoint(filename="best", monitor=monitor, mode=mode, save_weights_only=True, **common),
            ModelCheckpoint(filename="last", **common)]


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------- preemption

def signal_number(name: str | int) -> int:
    """'SIGTERM', 'TERM', 'USR2' or 15 -> the signal number; one-line error for an unknown name."""
    if isinstance(name, int):
        return name
    key = str(name).upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    if not hasattr(signal, key):
        raise UserError(f"stop_signals: unknown signal {name!r} (e.g. SIGTERM, SIGUSR1, SIGUSR2)")
    return int(getattr(signal, key))


class RunInterrupted(SystemExit):
    """A run stopped by a signal after saving what a resume needs; exits 128 + the signal number."""

    def __init__(self, signum: int, where: str):
        super().__init__(128 + signum)
        self.signum, self.where = signum, where

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name} {self.where}"


class StopOnSignal:
    """Catches the stop signals for the whole run. During setup (before the first training step) a
    signal stops the run at once (there is nothing to save); while training, it only sets `signum`,
    and `StopCheckpoint` stops at the end of the current optimizer step. After training (adapter export)
    it is ignored: the run is finishing anyway. The handlers found on entry (submitit's, for one) are
    restored on exit and `previous` keeps them, so the launcher's own handling (its requeue) can follow."""

    def __init__(self, signals: list[str | int]):
        self.signals = [signal_number(s) for s in signals]
        self.previous: dict[int, Any] = {}
        self.signum: int | None = None
        self.phase = "setup"

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        return False

    def reinstall(self) -> None:
        """Lightning installs its own SIGTERM handler when fit starts (it stops mid-validation); ours again."""
        for signum in self.previous:
            signal.signal(signum, self.handle)

    def handle(self, signum, frame) -> None:
        if self.phase == "done":
            log.warning("%s received after training; finishing the run", signal.Signals(signum).name)
            return
        first = self.signum is None
        self.signum = self.signum or signum
        if self.phase == "setup" and first:
            raise RunInterrupted(signum, "before the first training step")
        if first:
            log.warning("%s received: stopping after this optimizer step with a checkpoint",
                        signal.Signals(signum).name)

    def hand_over(self) -> None:
        """Run the handler that was there before ours for the signal received (submitit's requeue for its
        signal, which exits); nothing for a default handler."""
        handler = self.previous.get(self.signum)
        if callable(handler):
            handler(self.signum, None)


class StopCheckpoint(L.Callback):
    """Writes `last.ckpt` at the end of an optimizer step when a stop signal arrived (then stops the run),
    and every `every_n_steps` steps if set. A signal during an epoch's last batch or its validation is
    acted on at the epoch end, after the epoch's own checkpoint (so the epoch's results are complete).
    Listed after ResultsWriter, so a mid-epoch checkpoint holds the step's results. `save=False`
    (trainer.enable_checkpointing=false): stops without a checkpoint."""

    def __init__(self, folder: Path, stop: StopOnSignal, every_n_steps: int | None = None, save: bool = True):
        self.path, self.stop, self.every_n_steps, self.save = Path(folder) / "last.ckpt", stop, every_n_steps, save
        self.stopping, self.saved_step, self.stop_next_epoch = False, None, False

    def _save(self, trainer) -> None:
        if self.save:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        self.stop.phase = "train"
        self.stop.reinstall()

    def _requested(self, trainer) -> bool:
        return trainer.strategy.reduce_boolean_decision(self.stop.signum is not None, all=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if last or self._finishing(trainer):
            return  # the epoch end writes its checkpoint (and stops there if asked)
        if self._requested(trainer):
            self._save(trainer)
            self._stop(trainer)
        elif self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # the epoch's own checkpoints are written after this hook (Lightning runs ModelCheckpoint last): the run
        # stops when the next epoch starts, with the whole epoch saved
        if not self._finishing(trainer) and self._requested(trainer):
            self.stop_next_epoch = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.stop_next_epoch:
            self._stop(trainer)

    @staticmethod
    def _finishing(trainer) -> bool:
        """The run ends at this step/epoch anyway: a stop request lets it finish."""
        epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        return bool(trainer.should_stop or (0 <= trainer.max_steps <= trainer.global_step)
                    or (epoch_end and last_epoch))

    def _stop(self, trainer) -> None:
        """End the run here: Lightning hands the exception to every callback's `on_exception` (results.json
        says interrupted) and re-raises it out of `fit`."""
        self.stopping = True
        where = (f"at step {trainer.global_step} of {int(trainer.estimated_stepping_batches)} (epoch "
                 f"{trainer.current_epoch}), checkpoint {'saved' if self.save else 'off'}")
        raise RunInterrupted(self.stop.signum or signal.SIGTERM, where)

    def on_train_end(self, trainer, pl_module) -> None:
        self.stop.phase = "done"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the target's folder, fsync, rename over the target: a reader (or a
    second writer) sees the old file or the new one, never a mix. (Lightning's own transaction writes the
    temporary file in /tmp, and a move across file systems is a copy.) A full disk is `DiskFull` (atomic_write)
    and the earlier checkpoint at `path` is untouched."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


class RunDirBusy(UserError):
    """Another process holds the run dir's lock: this one must write nothing there."""


def held_elsewhere(folder: str | Path) -> bool:
    """Whether another process holds <folder>/.lock now (a running job)."""
    path = Path(folder) / ".lock"
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class RunLock:
    """An exclusive flock on <run dir>/.lock for as long as a process trains there. A second process is
    refused with one line; the kernel drops the lock when its holder dies (even by SIGKILL), so a
    killed job never blocks the next one."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self.fd: int | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(f"run dir {str(self.path.parent)!r} is in use by another process ({holder}); "
                            "wait for it to end, or use another run dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new holder)
            self.fd = None
        return False

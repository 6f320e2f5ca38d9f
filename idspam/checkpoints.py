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
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from .errors import UserError

log = logging.getLogger("idspam")

# config sections that must match for a resume to continue the same run
RESUME_KEYS = ("task", "model", "method", "head", "optimizer", "data", "trainer", "layer", "seed", "data_dir")


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


def resume_checkpoint(run_dir: str, fingerprint: dict) -> Path | None:
    """The `last.ckpt` of `run_dir`, after checking that it belongs to a run with this configuration;
    None for a run killed before its first checkpoint (it starts again from the beginning)."""
    folder = Path(run_dir).expanduser()
    path = folder / "checkpoints" / "last.ckpt"
    if not path.is_file():
        if (folder / "results.json").is_file():
            log.warning("resume=%s: the run has no checkpoint yet; starting it from the beginning", run_dir)
            return None
        raise UserError(f"resume={run_dir!r}: no checkpoint at {str(path)!r} (a run dir written by idspam.run, "
                        "with checkpoints/last.ckpt, is needed)")
    stored = load_checkpoint(path).get("idspam") or {}
    differ = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
    if differ:
        first = differ[0]
        raise UserError(f"resume={run_dir!r}: the configuration differs from the checkpoint's in {differ}; e.g. "
                        f"{first}: checkpoint {stored.get(first)!r}, now {fingerprint.get(first)!r}. Resume with the "
                        "same overrides as the original run")
    return path


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
        self.stopping, self.saved_step = False, None

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
        # Lightning raises after every on_train_epoch_end hook, so after the epoch's last.ckpt
        if not self._finishing(trainer) and self._requested(trainer):
            self._stop(trainer)

    @staticmethod
    def _finishing(trainer) -> bool:
        """The run ends at this step/epoch anyway: a stop request lets it finish."""
        epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        return bool(trainer.should_stop or (0 <= trainer.max_steps <= trainer.global_step)
                    or (epoch_end and last_epoch))

    def _stop(self, trainer) -> None:
        self.stopping = True
        trainer._signal_connector.received_sigterm = True  # Lightning's loops raise SIGTERMException next

    def on_train_end(self, trainer, pl_module) -> None:
        self.stop.phase = "done"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the target's folder, fsync, rename over the target: a reader (or a
    second writer) sees the old file or the new one, never a mix. (Lightning's own transaction writes the
    temporary file in /tmp, and a move across file systems is a copy.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
            raise UserError(f"run dir {str(self.path.parent)!r} is in use by another process ({holder}); "
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


# ---------------------------------------------------------------------------------------- resume=auto

def fingerprint_of(config: dict) -> dict:
    """The RESUME_KEYS of a resolved config (a run's `config` in results.json, or the current one), in
    JSON-normal form; trainer.default_root_dir (the run dir itself) left out."""
    fingerprint = {key: config.get(key) for key in RESUME_KEYS}
    if isinstance(fingerprint.get("trainer"), dict):
        fingerprint["trainer"] = {k: v for k, v in fingerprint["trainer"].items() if k != "default_root_dir"}
    return json.loads(json.dumps(fingerprint, default=str))


def differences(stored: dict, current: dict) -> list[str]:
    """The dotted keys (one level down) where two fingerprints differ."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def read_results(folder: Path) -> dict | None:
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"status": "unreadable"}


def attempt_record(results: dict) -> dict:
    """One line of a run's history: how an earlier attempt ended and how far it got."""
    record = {k: results.get(k) for k in ("status", "error", "stopped_at", "wall_time_s", "ended_at")
              if results.get(k) is not None}
    epochs = results.get("epochs") or []
    record.setdefault("stopped_at", {"epoch": epochs[-1]["epoch"] + 1 if epochs else 0,
                                     "step": epochs[-1]["step"] if epochs else 0})
    return record


def resume_plan(folder: Path, fingerprint: dict, mode: str) -> dict:
    """What a job does with its run dir under resume=auto (`mode`) or resume=never:
    {"action": new | reuse | resume | rerun, "ckpt": last.ckpt or None, "previous": results or None,
    "history": earlier attempts}. A run dir of another configuration is refused (UserError)."""
    folder = Path(folder)
    previous = read_results(folder)
    if previous is None:
        return {"action": "new", "ckpt": None, "previous": None, "history": []}
    history = list(previous.get("history") or [])
    if previous.get("status") not in ("finished",) or mode == "never":
        history.append(attempt_record(previous))
    if mode == "never":
        return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}
    if previous.get("status") == "unreadable" or not isinstance(previous.get("config"), dict):
        return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}
    differ = differences(fingerprint_of(previous["config"]), fingerprint)
    if differ:
        raise ConfigMismatch(f"{str(folder)!r} holds a run of another configuration (differs in "
                             f"{', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}); use another run/sweep dir, "
                             "or resume=never to train it again there")
    status = previous.get("status")
    if status == "finished" and not previous.get("count_only"):
        return {"action": "reuse", "ckpt": None, "previous": previous, "history": history}
    ckpt = folder / "checkpoints" / "last.ckpt"
    if status in ("interrupted", "running") and ckpt.is_file():
        return {"action": "resume", "ckpt": ckpt, "previous": previous, "history": history}
    return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}


class ConfigMismatch(UserError):
    """A run dir holds another configuration's run: refused, and nothing there is touched."""


def clear_checkpoints(folder: Path) -> None:
    """Before training a run dir again from scratch: an old last.ckpt must not be resumed later."""
    shutil.rmtree(Path(folder) / "checkpoints", ignore_errors=True)


def find_run_dir(prefix: str, fingerprint: dict) -> str | None:
    """resume=auto for a single run: the newest `<prefix>*` run dir (the default run dirs differ only in
    their time stamp) whose results.json holds this configuration."""
    base = Path(prefix)
    parent = base.parent
    if not parent.is_dir():
        return None
    for folder in sorted(parent.glob(base.name + "*"), key=lambda p: p.name, reverse=True):
        results = read_results(folder)
        if results and isinstance(results.get("config"), dict) and \
                not differences(fingerprint_of(results["config"]), fingerprint):
            return str(folder)
    return None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

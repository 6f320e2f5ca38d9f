"""results.json: written atomically after every epoch and at the end, so a crash never leaves it half-written."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from ..errors import UserError
from ..files import atomic_write_json, now_iso


class ResultsWriter(L.Callback):
    """Collects per-epoch metrics and training throughput; keeps results.json current."""

    def __init__(self, path: str | Path, header: dict, monitor: str, mode: str = "max", started: float | None = None):
        """`started`: perf_counter() at the start of the run, so wall_time_s covers loading too."""
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.results = {"status": "running", **header, "monitor": monitor, "best": None, "epochs": []}
        self.started = time.perf_counter() if started is None else started
        self.writes = True  # only the global rank 0 writes (multi-GPU: trainer=ddp)
        self.in_epoch, self._restored_partial = False, False
        self._reset_epoch()

    PARTIAL = ("loss_sum", "examples", "train_seconds", "tokens", "padding")

    def _reset_epoch(self):
        self.loss_sum, self.examples, self.train_seconds, self.eval = 0.0, 0, 0.0, {}
        self.tokens, self.padding = 0, 0

    def write(self) -> None:
        if not self.writes:
            return
        self.results["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        atomic_write_json(self.path, self.results)  # a full disk: DiskFull, one line

    def on_fit_start(self, trainer, pl_module):
        self.writes = trainer.is_global_zero
        self.write()  # a run that dies in its first epoch still leaves its config and status

    def on_train_epoch_start(self, trainer, pl_module):
        self.in_epoch = True
        if self._restored_partial:
            return  # resumed mid-epoch: the epoch's sums so far came with the checkpoint
        self._reset_epoch()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_seconds += time.perf_counter() - self._batch_start
        n = len(batch["labels"])
        mask = batch["attention_mask"]
        sums = [float(outputs["loss"]) * n, n, mask.numel(), int((mask == 0).sum())]
        if trainer.world_size > 1 and getattr(trainer.strategy, "shards_batches", False):
            # trainer=fsdp: the global batch's sums (every process then holds the same ones)
            sums = trainer.strategy.reduce(torch.tensor(sums, dtype=torch.float64), reduce_op="sum").tolist()
        self.loss_sum += sums[0]
        self.examples += int(sums[1])
        self.tokens += int(sums[2])
        self.padding += int(sums[3])

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.eval = dict(pl_module.last_eval)

    def on_train_epoch_end(self, trainer, pl_module):
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": self.loss_sum / max(self.examples, 1),
            "train_examples": self.examples,
            "train_seconds": round(self.train_seconds, 3),
            "train_examples_per_second": self.examples / self.train_seconds if self.train_seconds else None,
            "train_padding_fraction": self.padding / self.tokens if self.tokens else None,
            **self.eval,
        }
        self.in_epoch = self._restored_partial = False
        self.results["epochs"].append(record)
        scored = [e for e in self.results["epochs"] if self.monitor in e]
        if scored:
            pick = max if self.mode == "max" else min
            best = pick(scored, key=lambda e: e[self.monitor])
            self.results["best"] = {"epoch": best["epoch"], "value": best[self.monitor],
                                    "metrics": {k: v for k, v in best.items() if "/" in k}}
        seconds = sum(e["train_seconds"] for e in self.results["epochs"])
        examples = sum(e["train_examples"] for e in self.results["epochs"])
        self.results["train_examples_per_second"] = examples / seconds if seconds else None
        self.write()

    def on_fit_end(self, trainer, pl_module):
        self.write()  # "finished" only once the adapter is in place (train.finish)

    def on_exception(self, trainer, pl_module, exception):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from .checkpoints import DiskFull, RunInterrupted

        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException, RunInterrupted, DiskFull))
        self.results["status"] = "interrupted" if interrupted else "failed"
        self.results["error"] = f"{type(exception).__name__}: {exception}"
        if interrupted:
            self.results["stopped_at"] = progress(trainer)
        self.results["ended_at"] = now_iso()
        try:
            self.write()
        except UserError:  # the disk is still full: results.json keeps its last state (running: resumable)
            pass

    # saved in every checkpoint, so a resumed run continues its results where the checkpoint stands
    # (a mid-epoch checkpoint also holds the epoch's sums so far)
    def state_dict(self) -> dict:
        state = {key: self.results[key] for key in ("epochs", "best", "train_examples_per_second", "resumed")
                 if key in self.results}
        if self.in_epoch:
            state["partial_epoch"] = {key: getattr(self, key) for key in self.PARTIAL}
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        partial = state.pop("partial_epoch", None)
        self.results.update(state)
        self.results["resumed"] = self.results.get("resumed", 0) + 1
        if partial:
            for key, value in partial.items():
                setattr(self, key, value)
            self._restored_partial = self.in_epoch = True


def how_far(results: dict) -> str | None:
    """An unfinished run's progress in words: 'step 8 of 39 (epoch 0), checkpoint there'."""
    at = results.get("stopped_at")
    epochs = results.get("epochs") or []
    if not at and epochs:
        at = {"epoch": epochs[-1]["epoch"] + 1, "step": epochs[-1]["step"]}
    if not at:
        return None
    if at.get("phase") == "setup" and not at.get("step"):
        return "before the first step"
    total = f" of {at['of_steps']}" if at.get("of_steps") else ""
    saved = ", checkpoint there" if at.get("checkpoint") else ""
    return f"step {at.get('step')}{total} (epoch {at.get('epoch')}){saved}"


def history_text(results: dict, action: str | None = None) -> str:
    """A job's attempts, oldest first: 'interrupted at step 8 of 39 (epoch 0) > resumed > finished'."""
    parts = []
    for attempt in results.get("history") or []:
        far = how_far(attempt) if attempt.get("status") in ("interrupted", "running") else None
        parts.append(f"{attempt.get('status')}{' at ' + far if far else ''}")
    status = results.get("status", "missing")
    attempt = results.get("attempt")
    if action == "reused":
        return " > ".join(parts + [f"{status} (reused)"])
    if attempt in ("resume", "rerun") and parts:
        parts.append({"resume": "resumed", "rerun": "rerun"}[attempt])
    far = how_far(results) if status in ("interrupted", "running") else None
    return " > ".join(parts + [f"{status}{' at ' + far if far else ''}"])


def progress(trainer) -> dict:
    """How far a run got: the epoch, the optimizer steps done of all it was to do, and the step of the last
    checkpoint (where a resume continues)."""
    total = trainer.estimated_stepping_batches if trainer.num_training_batches != float("inf") else None
    stop = next((cb for cb in trainer.callbacks if type(cb).__name__ == "StopCheckpoint"), None)
    out = {"epoch": trainer.current_epoch, "step": trainer.global_step,
           "of_steps": int(total) if total not in (None, float("inf")) else None}
    if stop is not None and stop.path.is_file():
        out["checkpoint"] = str(stop.path)
    return out

"""Small checkpoints and exact resume.

`checkpoints/last.ckpt`, written after every epoch, holds the trained tensors, optimizer and
scheduler state, the loop position, the results so far and the random number generators' states at
the end of the epoch, so a resumed run shuffles and drops out exactly as an uninterrupted one.
`checkpoints/best.ckpt` holds the trained tensors of the best epoch by the validation metric.
Neither holds a frozen backbone tensor. Lightning writes it through an fsspec transaction
(a temporary file moved into place), so a kill never leaves a half-written checkpoint. Checkpoints
are read with `torch.load(weights_only=True)`: plain tensors and containers only.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
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
    return [ModelCheckpoint(filename="last", **common),
            ModelCheckpoint(filename="best", monitor=monitor, mode=mode, save_weights_only=True, **common)]


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

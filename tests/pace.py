"""Test helper: a Lightning callback that waits `ms` milliseconds before every training step, so that a signal
from another process lands while a job is still training, also in processes the test does not start itself (a
joblib sweep's workers import it by name: `+callbacks.pace._target_=tests.pace.Pace +callbacks.pace.ms=200`).
It changes no result."""

import time

from lightning.pytorch.callbacks import Callback


class Pace(Callback):
    def __init__(self, ms: int):
        self.seconds = ms / 1000

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        time.sleep(self.seconds)

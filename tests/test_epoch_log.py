"""One line per epoch in run.log and on the console (piped: no live bar)."""

import os
import re
import subprocess
import sys


def test_one_line_per_epoch_in_run_log_and_console_and_no_bar_in_a_pipe(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "idspam.run", "model=tiny", "trainer.max_epochs=3", "task.max_train_samples=16",
         "task.max_eval_samples=16", "logger=none", "method.prompt_length=2", "method.bottleneck=8",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    pattern = re.compile(r"epoch (\d)/2: train/loss \d+\.\d{4} .*validation/accuracy \d\.\d{4}.* \(\d+\.\d s\)")
    in_log = [m.group(1) for m in map(pattern.search, (tmp_path / "run.log").read_text().splitlines()) if m]
    assert in_log == ["0", "1", "2"]
    console = proc.stdout + proc.stderr
    assert [m.group(1) for m in map(pattern.search, console.splitlines()) if m] == ["0", "1", "2"]
    assert "━" not in console and "it/s" not in console  # no progress bar when stdout is a pipe

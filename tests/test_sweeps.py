"""Sweeps at the edges: a sweep with a failed job exits non-zero; SIGTERM to a joblib sweep reaches its jobs.
(A second sweep into a running sweep's folder: tests/test_faults.py.)"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .zygote import run_module

ROOT = Path(__file__).resolve().parents[1]
ONE_JOB = ["model=tiny", "task.max_train_samples=64", "task.max_eval_samples=32", "logger=none", "seed=1"]


def test_a_sweep_with_a_failed_job_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module("idspam.run", "-m", *ONE_JOB, "trainer.max_epochs=1", "optimizer.warmup_ratio=0",
                      "method.dropout=0", "optimizer.lr=1e-3,1e30", f"hydra.sweep.dir={sweep}", cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 jobs finished" in proc.stdout
    assert [json.loads((sweep / str(i) / "results.json").read_text())["status"] for i in (0, 1)] == \
        ["finished", "failed"]


JOBLIB_CONFIG = """\
# a user's own config file that picks the joblib launcher (not on the command line)
defaults:
  - config
  - override hydra/launcher: joblib
  - _self_
hydra:
  launcher:
    n_jobs: 2
"""


@pytest.mark.slow  # three short two-job sweeps: about a minute on the 2-core machine
def test_sigterm_to_a_joblib_sweeps_parent_reaches_its_workers_and_the_rerun_resumes_them(tmp_path):
    """The launcher is chosen in a config file (the parent used to forward only for hydra/launcher=joblib on the
    command line); the re-run of the same sweep resumes both jobs and gives the uninterrupted sweep's metrics."""
    import os

    import psutil

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "joblib_sweep.yaml").write_text(JOBLIB_CONFIG)
    args = ["-m", f"--config-dir={tmp_path / 'conf'}", "--config-name=joblib_sweep", "model=tiny",
            "task.max_train_samples=64", "task.max_eval_samples=32", "logger=none", "trainer.max_epochs=6", "seed=1,2",
            "+callbacks.pace._target_=tests.pace.Pace", "+callbacks.pace.ms=150"]  # 0.6 s of each epoch: waiting
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "idspam.run", *args, f"hydra.sweep.dir={sweep}"]
    parent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not all((sweep / str(i) / "checkpoints" / "last.ckpt").is_file()
                                             for i in (0, 1)):
        assert parent.poll() is None, parent.communicate()[1][-3000:]
        time.sleep(0.1)
    workers = [c for c in psutil.Process(parent.pid).children(recursive=True)
               if "resource_tracker" not in " ".join(c.cmdline())]
    assert len(workers) >= 2
    parent.send_signal(signal.SIGTERM)
    _, stderr = parent.communicate(timeout=300)
    assert parent.returncode == 143, stderr[-3000:]
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"workers still running after the sweep's parent exited: {alive}"
    for i in (0, 1):
        record = json.loads((sweep / str(i) / "results.json").read_text())
        assert record["status"] == "interrupted", record.get("error")
        assert (sweep / str(i) / "checkpoints" / "last.ckpt").is_file()
        assert len(record.get("epochs", [])) < 6
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 jobs finished (2 resumed)" in again.stdout, again.stdout[-2000:]
    reference = tmp_path / "reference"  # the same jobs uninterrupted, one after the other (the launcher and the
    plain = run_module("idspam.run", "-m", *args[3:-2], f"hydra.sweep.dir={reference}", cwd=ROOT)  # pace: no effect)
    assert plain.returncode == 0, plain.stderr[-3000:]

    def metrics(folder):
        record = json.loads((folder / "results.json").read_text())
        return record["status"], [(e["epoch"], e["train_loss"], e["validation/accuracy"]) for e in record["epochs"]]

    for i in (0, 1):
        resumed, uninterrupted = metrics(sweep / str(i)), metrics(reference / str(i))
        assert resumed == uninterrupted and len(resumed[1]) == 6  # exact: the resume continued where it stopped

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


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweeps_parent_reaches_its_workers(tmp_path):
    import psutil

    sweep = tmp_path / "sweep"
    args = ["-m", "model=tiny", "task.max_train_samples=64", "task.max_eval_samples=32", "logger=none",
            "trainer.max_epochs=200", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}"]
    parent = subprocess.Popen([sys.executable, "-m", "idspam.run", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not all((sweep / str(i) / "checkpoints" / "last.ckpt").is_file()
                                             for i in (0, 1)):
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

"""Preemption: a stop signal (SIGTERM, submitit's SIGUSR2) finishes the step, checkpoints, marks the run
interrupted and exits non-zero; running again resumes exactly; sweeps re-run only what is not finished;
the SLURM requeue path; two processes on one run dir."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .test_run import run_cli
from .zygote import run_module, start_module

ROOT = Path(__file__).resolve().parents[1]
# 6 steps per epoch, 12 in all: seconds per run on a 2-core CPU
RUN = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=96", "task.max_eval_samples=32", "logger=none"]


def signal_run(where: str, sig: str, n: int, *args, env=None) -> subprocess.CompletedProcess:
    """idspam.run with `sig` sent to itself at an exact point (tests/signal_at.py)."""
    return run_module("tests.signal_at", where, sig, str(n), *args, cwd=ROOT, env={**os.environ, **(env or {})})


def per_epoch(results):
    return [{k: v for k, v in e.items() if "/" in k or k in ("epoch", "step", "train_loss", "train_examples")}
            for e in results["epochs"]]


def trained(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must match."""
    out = tmp_path_factory.mktemp("whole")
    run_cli(*RUN, f"hydra.run.dir={out}")
    return out


@pytest.mark.parametrize("where, sig, n, stopped_step", [
    ("step", "TERM", 2, 3),         # mid-epoch: the step under way finishes, then the checkpoint
    ("step", "USR2", 2, 3),         # the launcher's signal (submitit: SIGUSR2)
    ("setup", "TERM", 0, 0),        # before the first step: nothing to save
    ("step", "TERM", 0, 1),         # during the first step
    ("step", "TERM", 5, 6),         # during the epoch's last batch: stops after the epoch's validation
    ("validation", "TERM", 1, 6),   # during validation: the validation finishes, then the epoch-end checkpoint
])
def test_stop_signal_then_resume_is_exact(whole, tmp_path, where, sig, n, stopped_step):
    out = tmp_path / "run"
    proc = signal_run(where, sig, n, *RUN, f"hydra.run.dir={out}")
    signum = getattr(signal, f"SIG{sig}")
    assert proc.returncode == 128 + signum, proc.stderr[-2000:]
    assert "results.json status interrupted" in proc.stderr
    stopped = results(out)
    assert stopped["status"] == "interrupted"
    assert stopped["stopped_at"]["step"] == stopped_step
    ckpt = out / "checkpoints" / "last.ckpt"
    if stopped_step:  # the checkpoint is where the run stopped: no step is trained twice
        assert torch.load(ckpt, weights_only=True)["global_step"] == stopped_step
    else:
        assert not ckpt.exists()

    proc = run_cli(*RUN, f"hydra.run.dir={out}", "resume=auto")
    resumed = results(out)
    assert resumed["status"] == "finished"
    assert resumed["attempt"] == ("resume" if stopped_step else "rerun")
    assert resumed["history"][0]["status"] == "interrupted"
    assert per_epoch(resumed) == per_epoch(results(whole))
    assert resumed["best"] == results(whole)["best"]
    assert same_tensors(trained(ckpt), trained(whole / "checkpoints" / "last.ckpt"))
    assert same_tensors(trained(out / "checkpoints" / "best.ckpt"), trained(whole / "checkpoints" / "best.ckpt"))


def test_signal_from_outside_during_training(whole, tmp_path):
    """A real SIGTERM from another process, whenever it lands: status interrupted, exit 143, exact resume."""
    out, mark = tmp_path / "run", tmp_path / "training"
    # 150 ms per step: 12 steps take about 2 s, so the signal sent 0.3 s after the first step lands mid-run
    proc = start_module("tests.signal_at", "pace", "-", "150", *RUN, f"hydra.run.dir={out}", cwd=ROOT,
                        env={**os.environ, "PACE_MARK": str(mark)})
    deadline = time.time() + 120
    while time.time() < deadline and not mark.is_file() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert results(out)["status"] == "interrupted"
    run_cli(*RUN, f"hydra.run.dir={out}", "resume=auto")
    assert per_epoch(results(out)) == per_epoch(results(whole))
    assert same_tensors(trained(out / "checkpoints" / "last.ckpt"), trained(whole / "checkpoints" / "last.ckpt"))


@pytest.mark.parametrize("every, resumed_from", [(2, 4), (None, None)])
def test_sigkill_loses_steps_back_to_the_last_checkpoint(whole, tmp_path, every, resumed_from):
    """SIGKILL (no chance to save) in step 6: with checkpoint_every_n_steps=2 the resume starts at step 4;
    without, nothing was saved in the first epoch and the run starts again. Both end exactly."""
    out = tmp_path / "run"
    extra = [f"checkpoint_every_n_steps={every}"] if every else []
    proc = signal_run("step", "KILL", 5, *RUN, *extra, f"hydra.run.dir={out}")
    assert proc.returncode == -signal.SIGKILL
    ckpt = out / "checkpoints" / "last.ckpt"
    assert (torch.load(ckpt, weights_only=True)["global_step"] if ckpt.exists() else None) == resumed_from
    run_cli(*RUN, *extra, f"hydra.run.dir={out}", "resume=auto")  # the lock of the killed process is gone
    resumed = results(out)
    assert resumed["attempt"] == ("resume" if every else "rerun")
    assert per_epoch(resumed) == per_epoch(results(whole))
    assert same_tensors(trained(ckpt), trained(whole / "checkpoints" / "last.ckpt"))


SWEEP = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=64", "task.max_eval_samples=32", "logger=none",
         "optimizer.warmup_ratio=0", "method.dropout=0", "optimizer.lr=1e-3,1e30,2e-3,3e-3"]


def job_files(job: Path) -> dict:
    files = [job / "results.json", job / "checkpoints" / "last.ckpt", job / "checkpoints" / "best.ckpt",
             *sorted((job / "adapter").iterdir())]
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def test_rerun_sweep_trains_only_the_killed_and_the_failed_job(tmp_path):
    """Job 1 fails (the loss becomes nan), job 3 is stopped by SIGTERM (the sweep stops with it). Running the
    same command again leaves jobs 0 and 2 as they were, resumes 3, reruns 1; the summary says so."""
    sweep = tmp_path / "sweep"
    proc = signal_run("step", "TERM", 1, "-m", *SWEEP, f"hydra.sweep.dir={sweep}", env={"SIGNAL_AT_JOB": "3"})
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert [results(sweep / str(i))["status"] for i in range(4)] == ["finished", "failed", "finished", "interrupted"]
    kept = {i: job_files(sweep / str(i)) for i in (0, 2)}

    proc = run_module("idspam.run", "-m", *SWEEP, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stderr[-2000:]  # job 1 failed again: the sweep is not a success
    for i in (0, 2):
        assert job_files(sweep / str(i)) == kept[i], f"finished job {i} was touched"
    summary = json.loads((sweep / "summary.json").read_text())
    rows = {r["job"]: r for r in summary["rows"]}
    assert [rows[i]["action"] for i in range(4)] == ["reused", "rerun", "reused", "resume"]
    assert [rows[i]["status"] for i in range(4)] == ["finished", "failed", "finished", "finished"]
    assert rows[1]["history"].startswith("failed > rerun > failed")
    assert rows[3]["history"].startswith("interrupted at step 2 of 8 (epoch 0), checkpoint there > resumed > finished")
    assert summary["actions"] == {"new": 0, "resume": 1, "rerun": 1, "reused": 2, "refused": 0}
    assert "3 of 4 jobs finished (2 reused, 1 resumed, 1 rerun)" in proc.stdout
    table = (sweep / "summary.md").read_text()
    assert "| reused | finished (reused) |" in table and "| resume | interrupted at step 2" in table

    # the report lists all four
    from idspam.tools.report import read_sweep

    assert [j.status for j in read_sweep(sweep)] == ["finished", "failed", "finished", "finished"]

    # another configuration in the same sweep dir: each job refused in one line, nothing touched
    proc = run_module("idspam.run", "-m", *[a.replace("max_epochs=2", "max_epochs=3") for a in SWEEP],
                      f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stderr[-2000:]  # every job refused
    assert "holds a run of another configuration (differs in trainer.max_epochs)" in proc.stderr
    assert job_files(sweep / "0") == kept[0]
    assert json.loads((sweep / "summary.json").read_text())["actions"]["refused"] == 4


def test_report_shows_how_far_an_interrupted_job_got(tmp_path):
    out = tmp_path / "run"
    signal_run("step", "TERM", 2, *RUN, f"hydra.run.dir={out}")
    from idspam.tools.report import read_sweep

    (job,) = read_sweep(out)
    assert job.status == "interrupted" and job.how_far == "step 3 of 12 (epoch 0), checkpoint there"
    from idspam.tools.report import markdown

    table = markdown({}, [job], [out], [])
    assert "| interrupted | RunInterrupted: stopped by SIGTERM at step 3 of 12 (epoch 0), checkpoint saved | " \
           "step 3 of 12 (epoch 0), checkpoint there |" in table


# ------------------------------------------------------------------ SLURM: submitit's requeue


def test_slurm_requeue_resumes_in_the_same_dir(whole, tmp_path):
    """The path a SLURM job takes: submitit runs the launcher's job (hydra/launcher=slurm), SLURM sends
    USR2 before the time limit, the run checkpoints, submitit's handler calls the launcher's checkpoint()
    and `scontrol requeue <job id>`, and the requeued job (submitit's _submit on the same folder) resumes
    from the checkpoint in the same job dir and ends exactly as an uninterrupted run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    sweep, folder = tmp_path / "sweep", tmp_path / "submitit"
    prepare = subprocess.run([sys.executable, str(ROOT / "tests" / "slurm_job.py"), "prepare", str(folder),
                              *RUN, f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242",
           "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NAME": "idspam",
           "SLURM_JOB_NODELIST": "node1", "SLURM_CPUS_ON_NODE": "2"}
    job = sweep / "0"
    first = subprocess.run([sys.executable, str(ROOT / "tests" / "slurm_job.py"), "run", str(folder), "USR2", "2"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert first.returncode != 0, first.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242_0"], first.stderr[-3000:]
    assert results(job)["status"] == "interrupted" and results(job)["stopped_at"]["step"] == 3
    second = subprocess.run([sys.executable, str(ROOT / "tests" / "slurm_job.py"), "run", str(folder)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert second.returncode == 0, second.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242_0"]  # not requeued again
    resumed = results(job)
    assert resumed["status"] == "finished" and resumed["attempt"] == "resume"
    assert per_epoch(resumed) == per_epoch(results(whole))
    assert same_tensors(trained(job / "checkpoints" / "last.ckpt"), trained(whole / "checkpoints" / "last.ckpt"))


def test_slurm_launcher_config_names_its_signal_and_requeue_limit():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml")
    assert cfg.signal_delay_s >= 60 and cfg.max_num_timeout > 0  # submitit's defaults: 120 s, 0 (no requeue)
    main = OmegaConf.load(ROOT / "conf" / "config.yaml")
    assert "SIGUSR2" in main.stop_signals  # submitit's signal (SUBMITIT_PREEMPT_SIGNAL, default USR2) stops a run


# ------------------------------------------------------------------ two processes, one run dir


def test_second_process_on_a_run_dir_is_refused_and_a_killed_ones_lock_is_not(tmp_path):
    out = tmp_path / "run"
    # the first run waits 500 ms before each step, so it holds the dir without taking a core from the others
    first = start_module("tests.signal_at", "pace", "-", "500", *RUN, "trainer.max_epochs=500",
                         f"hydra.run.dir={out}", cwd=ROOT, env={**os.environ, "PACE_MARK": str(tmp_path / "mark")})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "results.json").is_file():
        time.sleep(0.05)
    second = run_module("idspam.run", *RUN, f"hydra.run.dir={out}", "resume=auto")
    assert first.poll() is None, "the first run ended before the second one started"
    assert second.returncode == 2
    assert f"error: run dir '{out}' is in use by another process (pid {first.pid}" in second.stderr
    first.kill()
    first.wait()
    run_cli(*RUN, f"hydra.run.dir={out}", "resume=never")  # the kernel dropped the killed process's lock
    assert results(out)["status"] == "finished"


def _write_many(path: str, value: int, n: int) -> None:
    from idspam.files import atomic_write_json
    from idspam.runner.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    for _ in range(n):
        io.save_checkpoint({"value": torch.full((200_000,), value)}, Path(path) / "last.ckpt")
        atomic_write_json(Path(path) / "results.json", {"value": value, "pad": "x" * 200_000})


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    """Two processes rewriting the same checkpoint and results.json (write to a temporary file in the folder,
    fsync, rename): every read sees one writer's whole file."""
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(str(tmp_path), v, 15)) for v in (1, 2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or not reads:
        if (tmp_path / "last.ckpt").is_file() and (tmp_path / "results.json").is_file():
            t = torch.load(tmp_path / "last.ckpt", weights_only=True)["value"]
            assert t.unique().tolist() in ([1], [2])
            assert json.loads((tmp_path / "results.json").read_text())["value"] in (1, 2)
            reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from idspam.runner.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"value": 1}, tmp_path / "last.ckpt")

    def broken(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        io.save_checkpoint({"value": 2}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"value": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_resumed_run_continues_its_wandb_run(compose_cfg, tmp_path):
    from idspam.runner.checks import validate
    from idspam.runner.train import make_loggers

    run = validate(compose_cfg("model=tiny", "logger=wandb"))
    (logger,) = [lg for lg in make_loggers(run, resumed=True, wandb_id="abc123")
                 if type(lg).__name__ == "WandbLogger"]
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"


def test_resume_auto_finds_the_single_runs_own_dir(tmp_path):
    """resume=auto without a run dir: the newest outputs/runs/... dir holding the same configuration."""
    args = [*RUN[:-1], "logger=none", "trainer.max_epochs=1", "task.max_train_samples=32"]
    run_module("tests.signal_at", "step", "TERM", "0", *args, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    (first,) = (tmp_path / "outputs" / "runs").glob("*/*/*/*")
    assert results(first)["status"] == "interrupted"
    other = run_module("idspam.run", *args, "seed=7", "resume=auto", cwd=tmp_path)
    assert other.returncode == 0 and len(list((tmp_path / "outputs" / "runs").glob("*/*/*/*"))) == 2
    again = run_module("idspam.run", *args, "resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert results(first)["status"] == "finished" and results(first)["attempt"] == "resume"
    reused = run_module("idspam.run", *args, "resume=auto", cwd=tmp_path)
    assert "finished before, reused" in reused.stdout
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*/*/*"))) == 2


def test_resume_auto_reuses_a_finished_run_and_never_trains_it_again(compose_cfg, tmp_path):
    from idspam.runner.train import train

    args = ["model=tiny", "trainer.max_epochs=1", "task.max_train_samples=32", "task.max_eval_samples=16",
            "logger=none"]
    first = train(compose_cfg(*args))
    before = (tmp_path / "results.json").read_bytes()
    reused = train(compose_cfg(*args, "resume=auto"))
    assert reused == first and (tmp_path / "results.json").read_bytes() == before  # not trained, not rewritten
    assert json.loads((tmp_path / ".hydra" / "attempt.json").read_text())["action"] == "reused"
    again = train(compose_cfg(*args, "resume=never"))
    assert again["attempt"] == "rerun" and [h["status"] for h in again["history"]] == ["finished"]
    assert again["best"] == first["best"]  # the same seed trains to the same numbers

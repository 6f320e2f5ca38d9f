"""The multirun summary: one table of every job of a sweep, failed ones included; stop signals to a joblib
sweep's parent reach its workers.

Hydra calls `SweepSummary.on_multirun_end` when all jobs are done (configured in
conf/hydra/default.yaml); it writes `summary.json` and `summary.md` in the sweep dir and prints
the failures. `ForwardStopSignals.on_multirun_start` runs in the sweep's parent before any job starts.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..files import atomic_write_json, atomic_write_text
from .results import history_text, how_far

log = logging.getLogger("idspam")


def collect(sweep_dir: Path) -> list[dict]:
    """One row per job folder: its overrides, status, best metric and error."""
    rows = []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for job in sorted(jobs, key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        results_file = job / "results.json"
        try:
            results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        except json.JSONDecodeError:
            results = {"status": "failed", "error": "results.json is unreadable"}
        best = results.get("best") or {}
        attempt_file = job / ".hydra" / "attempt.json"
        try:
            action = json.loads(attempt_file.read_text()).get("action") if attempt_file.is_file() else None
        except (OSError, json.JSONDecodeError):
            action = None
        status = results.get("status", "missing")
        error = results.get("error")
        if action == "refused":  # the dir holds another configuration's run, left as it was
            status, error = "refused", "the job dir holds a run of another configuration (resume=never reruns it)"
        rows.append({
            "job": int(job.name), "overrides": overrides, "status": status,
            "monitor": results.get("monitor"), "best": best.get("value"), "best_epoch": best.get("epoch"),
            "wall_time_s": results.get("wall_time_s"), "error": error, "dir": str(job),
            # this invocation: new | resume | rerun | reused | refused (re-running a sweep into its dir)
            "action": action or results.get("attempt"), "history": history_text(results, action),
            "how_far": how_far(results) if status in ("interrupted", "running") else None,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The jobs as a table; overrides every job shares are listed once above it, the swept ones per row."""
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    lines = [f"Common overrides: {' '.join(o for o in rows[0]['overrides'] if o in common) or 'none'}", ""] if common \
        else []
    lines += ["| job | overrides | status | metric | best | epoch | wall s | this run | history | error |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = f"{r['best']:.4f}" if isinstance(r["best"], float) else ""
        wall = f"{r['wall_time_s']:.0f}" if r["wall_time_s"] else ""
        error = (r["error"] or "").replace("|", "/").splitlines()[0][:160] if r["error"] else ""
        swept = " ".join(o for o in r["overrides"] if o not in common)
        status = f"{r['status']} at {r['how_far']}" if r.get("how_far") else r["status"]
        lines.append(f"| {r['job']} | {swept} | {status} | {r['monitor'] or ''} | {best} | "
                     f"{'' if r['best_epoch'] is None else r['best_epoch']} | {wall} | {r.get('action') or ''} | "
                     f"{r.get('history') or ''} | {error} |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path) -> list[dict]:
    rows = collect(sweep_dir)
    failed = [r for r in rows if r["status"] != "finished"]
    actions = {a: sum(r.get("action") == a for r in rows) for a in ("new", "resume", "rerun", "reused", "refused")}
    atomic_write_json(sweep_dir / "summary.json", {"jobs": len(rows), "failed": len(failed), "actions": actions,
                                                   "rows": rows})
    atomic_write_text(sweep_dir / "summary.md", markdown(rows))
    return rows


class SweepSummary(Callback):
    unfinished = 0  # jobs of the last multirun in this process that did not finish; `app.main` exits 1 if any

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .checkpoints import held_elsewhere

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        busy = [p.name for p in sorted(sweep_dir.iterdir()) if p.is_dir() and p.name.isdigit() and held_elsewhere(p)]
        if busy:  # another sweep is running in this dir: its summary is its own to write
            print(f"error: sweep dir {str(sweep_dir)!r} is in use by another process (job(s) {', '.join(busy)} "
                  "running there); nothing was written. Wait for it to end, or use another hydra.sweep.dir",
                  file=sys.stderr)
            sys.exit(2)
        rows = write_summary(sweep_dir)
        failed = [r for r in rows if r["status"] != "finished"]
        SweepSummary.unfinished = len(failed)
        done = {a: sum(r.get("action") == a for r in rows) for a in ("reused", "resume", "rerun", "new", "refused")}
        this_run = ", ".join(f"{n} {'resumed' if a == 'resume' else a}" for a, n in done.items() if n)
        print(f"sweep summary: {len(rows) - len(failed)} of {len(rows)} jobs finished ({this_run}); "
              f"{sweep_dir / 'summary.md'}")
        for r in failed:
            far = f" at {r['how_far']}" if r.get("how_far") else ""
            print(f"  job {r['job']} ({' '.join(r['overrides'])}): {r['status']}{far}: {r['error']}")
        if STOPPED:  # a joblib sweep stopped by a signal: exit 128 + the signal, as its jobs do
            sys.exit(128 + STOPPED)
        if failed:  # a sweep with failed, refused or unfinished jobs is not a success (CI, make, job arrays)
            sys.exit(1)


def uses_joblib(config: DictConfig) -> bool:
    """Whether the composed config's launcher is joblib's (chosen on the command line, in an experiment config
    or in a config file of the user's)."""
    from omegaconf import OmegaConf

    target = OmegaConf.select(config, "hydra.launcher._target_", default="") or ""
    return "joblib" in str(target).lower()


STOPPED: int | None = None  # the stop signal a joblib sweep's parent sent on to its workers (app.main exits with it)
PARENT_ENV = "IDSPAM_SWEEP_PARENT"  # the joblib sweep parent's pid, inherited by its workers
_worker_stop: int | None = None  # a stop signal this joblib worker received (between jobs, or ending one)
STOP_SIGNALS = ("SIGTERM", "SIGUSR2", "SIGINT")


def forward_stop_signals() -> None:
    """The joblib launcher's parent: a SIGTERM / SIGUSR2 / SIGINT is sent on to its (loky) workers, whose jobs
    then checkpoint and mark themselves interrupted, and whose jobs not yet started return at once
    (`job_in_joblib_worker`); joblib's call then ends as for a finished sweep (no worker is killed: joblib would
    kill every worker the moment one job raised, in the middle of the others' checkpoints), and `app.main`
    exits 128 + the signal."""
    import os
    import signal

    os.environ[PARENT_ENV] = str(os.getpid())

    def forward(signum, frame):
        global STOPPED
        import psutil

        children = [c for c in psutil.Process().children(recursive=True)  # the workers, not resource trackers
                    if "resource_tracker" not in " ".join(c.cmdline())]
        for child in children:
            try:
                child.send_signal(signum)
            except psutil.NoSuchProcess:
                pass
        if STOPPED is None:
            print(f"interrupted: {signal.Signals(signum).name} sent on to {len(children)} worker process(es); their "
                  "jobs stop after the current step with a checkpoint, jobs not started are left; run the same -m "
                  "command again to resume", file=sys.stderr)
        STOPPED = STOPPED or signum

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), forward)


def job_in_joblib_worker() -> bool:
    """Whether this process is a worker of a joblib sweep's parent (which forwards stop signals). Called at the
    start of each job there: from then on a stop signal between jobs is noted (`worker_stopped`), not fatal (a
    dead worker would make joblib kill the others)."""
    import os
    import signal

    parent = os.environ.get(PARENT_ENV)
    if parent is None or parent == str(os.getpid()):
        return False

    for name in STOP_SIGNALS:
        if signal.getsignal(getattr(signal, name)) is not _note_stop:
            signal.signal(getattr(signal, name), _note_stop)
    return True


def _note_stop(signum, frame) -> None:
    global _worker_stop
    _worker_stop = _worker_stop or signum


def worker_stopped() -> int | None:
    """The stop signal this joblib worker received, or None."""
    return _worker_stop


class ForwardStopSignals(Callback):
    """In a multirun's parent, before the first job: with the joblib launcher, stop signals are forwarded to its
    worker processes (`forward_stop_signals`). Other launchers handle their own (submitit: SLURM's signal)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if uses_joblib(config):
            forward_stop_signals()

"""`idspam-run` / `python -m idspam.run [group=choice ...] [key=value ...]`, `-m` for a Hydra multirun.

`main` checks the group choices (one line naming the valid ones), registers the schemas and resolvers,
and hands over to Hydra; every job runs `train.train`.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import warnings
from pathlib import Path

from ..errors import UserError


def job(cfg) -> float | None:
    """One Hydra job. A user's mistake is one line (exit 2); in a multirun it is recorded in the job's own
    results.json and the other jobs go on (the sweep summary lists it)."""
    from hydra.core.hydra_config import HydraConfig

    from ..files import atomic_write_json
    from .checkpoints import RunDirInUse
    from .resume import ConfigMismatch, record_attempt
    from .train import is_multirun, train

    multirun = is_multirun()
    try:
        results = train(cfg)
    except Exception as e:
        if not multirun and not isinstance(e, UserError):
            raise  # a bug: the traceback is the useful part
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"error: {message}", file=sys.stderr)
        if multirun and isinstance(e, RunDirInUse):  # another process trains there: write nothing into its dir
            return None
        if multirun and isinstance(e, ConfigMismatch):  # the dir holds another run: leave it as it is
            record_attempt(Path(HydraConfig.get().runtime.output_dir), "refused")
            return None
        if multirun:
            out = Path(HydraConfig.get().runtime.output_dir)
            previous = out / "results.json"
            record = json.loads(previous.read_text()) if previous.is_file() else {}
            record.update(status="failed", error=message)
            if not isinstance(e, UserError):
                record["traceback"] = traceback.format_exc()
            atomic_write_json(previous, record)
            return None
        sys.exit(2)
    return results["best"]["value"] if results.get("best") else None


def quiet_known_warnings() -> None:
    # The frozen backbone is in eval mode on purpose (model.backbone_mode); Lightning warns about it.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # inside Lightning 2.6
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "Tip:" not in r.getMessage())


def forward_stop_signals() -> None:
    """The joblib launcher's parent: a SIGTERM / SIGUSR2 / SIGINT is sent on to its (loky) workers, whose jobs
    then checkpoint and mark themselves interrupted; the parent waits for them, then exits 128 + the signal."""
    import signal

    def forward(signum, frame):
        import psutil

        children = [c for c in psutil.Process().children(recursive=True)  # the workers, not resource trackers
                    if "resource_tracker" not in " ".join(c.cmdline())]
        for child in children:
            try:
                child.send_signal(signum)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(children, timeout=300)
        print(f"interrupted: {signal.Signals(signum).name} sent on to {len(children)} worker process(es); run "
              "the same -m command again to resume", file=sys.stderr)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(signum, forward)


def main() -> None:
    from .compose import CONFIG_PATH, check_group_choices, register

    try:
        check_group_choices(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    import hydra
    import lightning.pytorch  # noqa: F401 - before Hydra sets up logging: Lightning then logs through it, once

    from ..files import git_commit

    if any(a.replace(" ", "") == "hydra/launcher=joblib" for a in sys.argv[1:]):
        forward_stop_signals()
    git_commit()  # of the code this process loaded, before any job starts (a later checkout is not reported)
    register()
    quiet_known_warnings()
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(job)()
    from .sweep import SweepSummary

    if SweepSummary.unfinished:  # a multirun with failed, refused or still-running jobs: not a success
        sys.exit(1)

"""`idspam-run` / `python -m idspam.run [group=choice ...] [key=value ...]`, `-m` for a Hydra multirun.

`main` checks the group choices (one line naming the valid ones), registers the schemas and resolvers,
and hands over to Hydra; every job runs `train.train`.
"""

from __future__ import annotations

import json
import logging
import signal
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
    from . import sweep
    from .checkpoints import DiskFull, RunDirBusy, RunInterrupted
    from .resume import ConfigMismatch, record_attempt
    from .train import is_multirun, train

    multirun = is_multirun()
    worker = multirun and sweep.job_in_joblib_worker()
    if worker and sweep.worker_stopped():
        print(f"skipped: the sweep was stopped ({signal.Signals(sweep.worker_stopped()).name}); the same -m command "
              "runs this job", file=sys.stderr)
        return None
    try:
        results = train(cfg)
    except RunInterrupted:
        if worker:  # marked interrupted; raising would make joblib kill the other workers mid-checkpoint
            return None
        raise
    except Exception as e:
        if not multirun and not isinstance(e, UserError):
            raise  # a bug: the traceback is the useful part
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"error: {message}", file=sys.stderr)
        if multirun and isinstance(e, (RunDirBusy, DiskFull)):  # another process's job, or no space to write in
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
    # PEFT imports bitsandbytes wherever it is installed (the [quant] extra); its CPU backend then says, on every
    # run, that an optional faster 4-bit kernel package is missing. Quantized runs work without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: "kernels-community" not in r.getMessage())


COMMON = """\
Common overrides:
  task=rte data_dir=../shared/data/glue_data   a GLUE task from local files (null data_dir: the HF hub)
  model=roberta_base method=lpt layer=6        backbone, method, injection layer
  trainer.max_epochs=3 optimizer.lr=3e-4       any lightning Trainer argument: trainer.accumulate_grad_batches=2
  data.batch_size=32 seed=1                    batches and seed
  callbacks=[early_stopping,lr_monitor]        extra Lightning callbacks
  logger=wandb                                 W&B (WANDB_MODE=offline writes to disk)
  resume=auto                                  continue or reuse this configuration's run
  -m method=idspam,lpt seed=1,2,3              a sweep (hydra/launcher=joblib: jobs in parallel)
  +key=value                                   a key the config does not have yet

Inspect: --cfg job (the composed config), --info searchpath, --hydra-help (Hydra's own options).
Docs: docs/runner.md (configs, resume, sweeps) and docs/outputs.md (run dirs, results.json) in the
repository; README.md is the front page."""


def help_text() -> str:
    """`idspam-run --help`: the groups a user picks from and their choices, common overrides, the docs."""
    from .compose import choices, groups

    lines = ["idspam-run: train and evaluate one configuration (python -m idspam.run [group=choice] [key=value])",
             "", "Config groups (group=choice):"]
    for group in groups():
        lines.append(f"  {group:<15}{', '.join(choices(group))}")
    return "\n".join([*lines, "", COMMON])


def check_resume_dir(argv: list[str]) -> None:
    """resume=<dir> runs in that dir: a dir that does not exist is one line, and is not created (Hydra would
    make it the run dir)."""
    for arg in argv:
        if arg.startswith("resume=") and arg[7:] not in ("auto", "never", "null", ""):
            folder = Path(arg[7:]).expanduser()
            if not folder.is_dir():
                raise UserError(f"resume={arg[7:]}: no such run dir (resume=<a run dir>, auto or never)")


def main() -> None:
    from ..errors import missing_extra

    missing = missing_extra("runner", "idspam-run")
    if missing:  # the library alone is installed: one line, not an ImportError traceback
        print(f"error: {missing}", file=sys.stderr)
        sys.exit(2)
    from .compose import CONFIG_PATH, check_group_choices, check_overrides, register

    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(help_text())
        return

    try:
        check_group_choices(sys.argv[1:])
        check_overrides(sys.argv[1:])
        check_resume_dir(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    import hydra
    import lightning.pytorch  # noqa: F401 - before Hydra sets up logging: Lightning then logs through it, once

    from ..files import git_commit

    # a joblib sweep's parent forwards stop signals to its workers: sweep.ForwardStopSignals, a Hydra callback
    # that decides from the composed config (the launcher may be chosen in an experiment or a config file)
    git_commit()  # of the code this process loaded, before any job starts (a later checkout is not reported)
    register()
    quiet_known_warnings()
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(job)()
    from . import sweep

    if sweep.STOPPED:  # a joblib sweep stopped by a signal (its summary exits so too, when it is written)
        sys.exit(128 + sweep.STOPPED)
    if sweep.SweepSummary.unfinished:  # a multirun with failed, refused or still-running jobs: not a success
        sys.exit(1)

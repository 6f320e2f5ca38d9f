"""Test helper: `python -m tests.signal_at <where> <signal> <n> <idspam.run args...>` runs idspam.run and sends
the process <signal> (TERM, USR2, ...) at a chosen point, from inside, so the kill point is exact:
  step <n>        when optimizer step n+1 starts (the forward/backward of that step has not run yet)
  validation <n>  when the n-th validation batch of the run starts
  setup 0         while the data is read (before the model loads and before the first step)
  pace <ms>       sends nothing: every training step waits <ms> first, and the file $PACE_MARK is created when
                  the first step starts (for a test whose signal comes from another process; <signal> is ignored)
In a multirun, SIGNAL_AT_JOB=<k> limits it to job k. <signal> KILLGROUP: SIGKILL to the whole process group (a
multi-process run, e.g. trainer=fsdp, dies at once; start the helper in a session of its own). A process that
Lightning launches for another rank runs this module with the idspam.run arguments alone: it only runs them.
"""

import os
import signal
import sys

import lightning as L


def main() -> None:
    if sys.argv[1:2] not in (["step"], ["validation"], ["setup"], ["pace"]):  # another rank's process
        from idspam.runner.app import main as run_main

        return run_main()
    where, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.argv = [sys.argv[0], *sys.argv[4:]]
    signum = getattr(signal, f"SIG{name}", None)

    def fire() -> bool:
        job = os.environ.get("SIGNAL_AT_JOB")
        if job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != int(job):
                return False
        if name == "KILLGROUP":
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signum)
        return True

    if where == "pace":
        import time
        from pathlib import Path

        from idspam.runner.results import ResultsWriter

        original_step = ResultsWriter.on_train_batch_start

        def paced(self, trainer, *args):
            Path(os.environ["PACE_MARK"]).touch()
            time.sleep(n / 1000)
            return original_step(self, trainer, *args)

        ResultsWriter.on_train_batch_start = paced
    elif where == "setup":
        from idspam.runner.data import TaskDataModule

        setup = TaskDataModule.setup

        def setup_then_signal(self, stage=None):
            fire()
            return setup(self, stage)

        TaskDataModule.setup = setup_then_signal
    else:
        from idspam.runner.results import ResultsWriter

        hook = "on_train_batch_start" if where == "step" else "on_validation_batch_start"
        seen = {"n": 0}

        def at(self, trainer, pl_module, batch, batch_idx, *rest):
            if where == "step" and trainer.global_step == n and not seen["n"]:
                seen["n"] = fire()
            if where == "validation" and not trainer.sanity_checking:
                seen["n"] += 1
                if seen["n"] == n:
                    fire()
            return original(self, trainer, pl_module, batch, batch_idx, *rest)

        original = getattr(ResultsWriter, hook, L.Callback.on_train_batch_start)
        setattr(ResultsWriter, hook, at)
    from idspam.runner.app import main as run_main

    run_main()


if __name__ == "__main__":
    main()

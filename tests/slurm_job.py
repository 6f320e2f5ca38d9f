"""Test helper: the SLURM path of hydra/launcher=slurm without a scheduler.

  python tests/slurm_job.py prepare <folder> <overrides...>   what the launcher's sbatch submission writes: the
      launcher and the job's arguments pickled as <folder>/4242_0_submitted.pkl (job 4242, array task 0)
  python tests/slurm_job.py run <folder> [USR2 <n>]            what the SLURM job runs (`python -m
      submitit.core._submit <folder>`), optionally sending itself SIGUSR2 when optimizer step n+1 starts, as
      SLURM does before a time limit. Run with the SLURM_* variables of a job.
"""

import os
import signal
import sys
from pathlib import Path


def prepare(folder: Path, overrides: list[str]) -> None:
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton
    from hydra.types import HydraContext, RunMode
    from submitit.core.utils import DelayedSubmission

    from idspam.runner import app
    from idspam.runner.compose import CONFIG_PATH, register

    GlobalHydra.instance().clear()
    register()
    hydra = Hydra.create_main_hydra2(task_name="run", config_search_path=create_config_search_path(CONFIG_PATH))
    sweep_overrides = [o for o in overrides if not o.startswith("hydra")]
    # as `python -m idspam.run -m ... hydra/launcher=slurm` composes it (`-m` adds hydra.mode=MULTIRUN)
    cfg = hydra.compose_config("config", [*overrides, "hydra/launcher=slurm", "hydra.mode=MULTIRUN"],
                               run_mode=RunMode.MULTIRUN,
                               with_log_configuration=False)
    HydraConfig.instance().set_config(cfg)
    from hydra._internal.callbacks import Callbacks

    context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))
    launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=app.job,
                                                       config=cfg)
    delayed = DelayedSubmission(launcher, sweep_overrides, "hydra.sweep.dir", 0, "job_id_for_0", Singleton.get_state())
    delayed.set_timeout(cfg.hydra.launcher.timeout_min, cfg.hydra.launcher.max_num_timeout)
    folder.mkdir(parents=True, exist_ok=True)
    delayed.dump(folder / "4242_0_submitted.pkl")


def run_job(folder: Path, signal_at: list[str]) -> None:
    if signal_at:
        signum, n = getattr(signal, f"SIG{signal_at[0]}"), int(signal_at[1])
        from idspam.runner.results import ResultsWriter

        original, fired = ResultsWriter.on_train_batch_start, []

        def at(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == n and not fired:
                fired.append(1)
                os.kill(os.getpid(), signum)
            return original(self, trainer, pl_module, batch, batch_idx)

        ResultsWriter.on_train_batch_start = at
    from submitit.core.submission import process_job

    process_job(folder)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), sys.argv[3:])
    else:
        run_job(Path(sys.argv[2]), sys.argv[3:])

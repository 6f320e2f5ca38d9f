"""One run: train and evaluate a configuration, from the composed config to results.json and the adapter.

The order matters for users: every check that needs no weights runs first (`checks.validate`: config
values, task, files, layer range; then the backbone's config), then the data is read and tokenised,
and only then is the model loaded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig, open_dict

from ..adapter import check_backbone, export_adapter, read_adapter
from ..config import RunConfig, TaskConfig, typed
from ..errors import UserError
from ..files import atomic_write_json, git_commit, package_versions
from ..model import count_on_meta, load_model, load_parts
from .checkpoints import (
    AtomicCheckpointIO,
    DiskFull,
    RunInterrupted,
    RunLock,
    StopCheckpoint,
    StopOnSignal,
    checkpoint_callbacks,
    load_checkpoint,
)
from .checks import check_transfer, validate
from .data import TaskDataModule
from .lower_cache import make_lower_cache
from .module import EpochLog, TuningModule
from .results import ResultsWriter
from .resume import clean_temp_files, fingerprint, mark_interrupted, plan_run, record_attempt

log = logging.getLogger("idspam")


def train(cfg: DictConfig, extra_header: dict | None = None) -> dict:
    """Train and evaluate one configuration; returns the results written to results.json."""
    started = time.perf_counter()
    run = validate(cfg)
    if cfg.get("source_task"):
        return train_from_source(cfg)
    if run.count_only:
        return write_counts(run, started)
    # one process per run dir (a lock the kernel drops if the process dies); stop signals stop cleanly
    stop = StopOnSignal(run.stop_signals)
    try:
        with RunLock(run.output_dir) if rank_zero() else nullcontext(), stop:
            try:
                return train_run(run, started, stop, extra_header)
            except RunInterrupted as e:
                if rank_zero():
                    mark_interrupted(Path(run.output_dir), run.resolved, e)
                raise
            except DiskFull as e:  # interrupted, not failed: resume=auto continues once there is space
                if rank_zero():
                    try:
                        mark_interrupted(Path(run.output_dir), run.resolved, e)
                    except (UserError, OSError):  # the run dir's disk is the full one: results.json stays as it was
                        pass
                raise
    except RunInterrupted as e:
        print(f"interrupted: {e}; results.json status interrupted. Run the same command again to resume "
              f"({'the same -m command: finished jobs are kept' if is_multirun() else 'with resume=auto'})",
              file=sys.stderr)
        stop.hand_over()  # under submitit, its handler for its signal: checkpoint() and requeue (then exits)
        raise


def train_run(run: RunConfig, started: float, stop: StopOnSignal, extra_header: dict | None = None) -> dict:
    """The training path of `train`, inside the run dir's lock and the stop-signal handlers."""
    config, tokenizer = load_parts(run)  # the backbone's config and the tokenizer: checks before any weights
    output_dir = Path(run.output_dir)
    plan = plan_run(run, output_dir, is_multirun(), rank_zero())
    if rank_zero() and plan["action"] != "reuse" and (left := clean_temp_files(output_dir)):
        log.info("removed temporary files an interrupted run left: %s", ", ".join(left))
    if rank_zero():
        record_attempt(output_dir, "reused" if plan["action"] == "reuse" else plan["action"])
    if plan["action"] == "reuse":
        return reuse(plan["previous"], output_dir)
    start = transfer_start(run, config) if run.init_from else None

    import lightning as L

    L.seed_everything(run.seed, workers=True, verbose=False)
    data = TaskDataModule(run, tokenizer, config)
    data.setup()  # data problems surface here, before the weights are loaded
    model, _ = load_model(run, config, tokenizer)
    if start is not None:
        model.load_trained_state(start, f"init_from={run.init_from!r}")
    if run.cache_lower:
        model.lower_cache = make_lower_cache(run, data, config, model)
        model.eval_caches = {ev.key: make_lower_cache(run, data, config, model, ev.key)
                             for ev in data.evals if "row" in data.splits[ev.key].column_names}
    module = TuningModule(model, run.spec, run.optimizer, lr=run.method.lr,
                          evals=[(ev.key, ev.spec) for ev in data.evals])
    module.fingerprint = fingerprint(run.resolved)
    module.predictions_dir = run.output_dir  # per-example predictions and (head=generate) generations

    writer = ResultsWriter(output_dir / "results.json", results_header(run, model, data, plan, extra_header),
                           monitor(run), mode=monitor_mode(run), started=started)
    trainer, loggers = make_trainer(run, writer, stop, plan)
    log_hyperparameters(loggers, writer.results)
    log.info("training %s on %s with %s, layer %d: %s trainable parameters (head %s)%s", run.method.name,
             run.spec.name, run.model.name, run.layer, f"{writer.results['parameters']['trainable']:,}",
             run.head.type, f"; resuming from {plan['ckpt']}" if plan["ckpt"] else "")
    fit(trainer, module, data, plan["ckpt"], writer, loggers, stop)
    if not trainer.is_global_zero:  # multi-GPU: rank 0 exports the adapter and writes the results
        return writer.results
    return finish(run, model, config, writer)


def reuse(previous: dict, output_dir: Path) -> dict:
    best = previous.get("best") or {}
    log.info("%s: finished before; its results are reused (resume=never trains it again)", output_dir)
    if best:
        print(f"dev {previous.get('monitor')} = {best['value']:.4f} (best epoch {best['epoch']}); finished "
              f"before, reused; results: {output_dir / 'results.json'}")
    return previous


def monitor(run: RunConfig) -> str:
    """The metric that picks the best epoch: the first evaluation split's task metric."""
    return f"{run.spec.eval_splits[0]}/{run.spec.metric}"


def monitor_mode(run: RunConfig) -> str:
    return "min" if run.spec.metric == "mse" else "max"


def results_header(run: RunConfig, model, data, plan: dict, extra: dict | None) -> dict:
    spec = run.spec
    return {
        "experiment": run.experiment_name, "task": spec.name, "method": run.method.name,
        "model": run.model.name, "layer": run.layer, "seed": run.seed, "head": run.head.type,
        "table_metric": f"{spec.table_split}/{spec.metric}",  # the metric the paper's tables report for this task
        "eval_tasks": run.eval_tasks, "init_from": run.init_from, **(extra or {}),
        "parameters": model.parameter_counts(),
        "data": {split: len(ds) for split, ds in data.splits.items()},
        "versions": package_versions(), "git_commit": git_commit(), "config": run.resolved,
        "attempt": plan["action"], **({"history": plan["history"]} if plan["history"] else {}),
    }


def make_trainer(run: RunConfig, writer: ResultsWriter, stop: StopOnSignal, plan: dict):
    """The Lightning Trainer of the `trainer` group, with the run's callbacks, loggers and checkpoint IO."""
    from hydra.utils import instantiate

    checkpoints = Path(run.output_dir) / "checkpoints"
    checkpointing = run.trainer.get("enable_checkpointing") is not False  # unset (None): Lightning's default, on
    callbacks = [writer, StopCheckpoint(checkpoints, stop, run.checkpoint_every_n_steps, save=checkpointing)]
    if checkpointing:
        callbacks += checkpoint_callbacks(checkpoints, monitor(run), monitor_mode(run))
    callbacks += extra_callbacks(run)
    previous_wandb = ((plan["previous"] or {}).get("wandb") or {}).get("id") if plan["ckpt"] else None
    loggers = make_loggers(run, resumed=plan["action"] in ("resume", "rerun") or bool(run.resume),
                           wandb_id=previous_wandb)
    callbacks.append(EpochLog())
    # the live bar only on a terminal: under SLURM or a pipe it shows only at the end (EpochLog's lines do)
    # (the trainer schema lists every Trainer argument, unset ones as None)
    chosen = run.trainer.get("enable_progress_bar") is not None
    bar = {} if chosen or sys.stdout.isatty() else {"enable_progress_bar": False}
    trainer = instantiate(run.trainer, logger=loggers or False, callbacks=callbacks, plugins=trainer_plugins(),
                          **bar)
    if trainer.world_size == 1:  # the training sampler continues a mid-epoch checkpoint's epoch (data.py)
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
    return trainer, loggers


def extra_callbacks(run: RunConfig) -> list:
    """The `callbacks` group's Lightning callbacks (early stopping watches the run's monitor unless told)."""
    from hydra.utils import instantiate

    out = []
    for name, node in sorted(run.callbacks.items()):
        node = dict(node)
        if name == "early_stopping":
            node["monitor"] = node.get("monitor") or monitor(run)
            node["mode"] = node.get("mode") or monitor_mode(run)
        out.append(instantiate(node))
    return out


def flatten(node, prefix: str = "") -> dict:
    """{"model.name": ..., "method.lr": ...}: a nested config as the dotted keys W&B's sweep, table and
    parallel-coordinates views compare runs on (lists stay values)."""
    out = {}
    for key, value in (node or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_hyperparameters(loggers: list, results: dict) -> None:
    """Every logger gets the resolved config (flattened), the parameter counts and the git commit: W&B's run
    config, the CSV logger's hparams.yaml."""
    params = {**flatten(results.get("config") or {}),
              **{f"parameters.{k}": v for k, v in (results.get("parameters") or {}).items()},
              "git_commit": results.get("git_commit"), "experiment": results.get("experiment")}
    for logger in loggers:
        logger.log_hyperparams(params)


def best_summary(results: dict) -> dict:
    """W&B summary values of the best epoch (`best/<metric>`, `best/epoch`) and the parameter counts (the
    summary otherwise holds the last epoch's values)."""
    best = results.get("best") or {}
    out = {f"best/{k}": v for k, v in (best.get("metrics") or {}).items()}
    if best:
        out.update({"best/epoch": best.get("epoch"), "best/value": best.get("value")})
    out.update({f"parameters/{k}": v for k, v in (results.get("parameters") or {}).items()})
    return out


def fit(trainer, module, data, ckpt_path, writer: ResultsWriter, loggers: list, stop: StopOnSignal) -> None:
    """trainer.fit; a stop signal (after `StopCheckpoint` saved) ends it with `RunInterrupted`."""
    from lightning.pytorch.loggers import WandbLogger

    interrupted = None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except RunInterrupted as e:
        interrupted = e
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                run_ = logger.experiment
                run_.summary.update(best_summary(writer.results))
                writer.results["wandb"] = {"project": run_.project, "group": run_.group, "id": run_.id,
                                           "name": run_.name}
                run_.finish(exit_code=1 if interrupted else None)  # one W&B run per job: jobs must not merge
    if interrupted is not None:
        writer.write()
        raise interrupted


def finish(run: RunConfig, model, config, writer: ResultsWriter) -> dict:
    """The adapter of the best epoch (the one results.json reports), then the final results."""
    output_dir = Path(run.output_dir)
    results = writer.results
    best_ckpt = output_dir / "checkpoints" / "best.ckpt"
    if best_ckpt.is_file():
        model.load_trained_state(
            {k.removeprefix("model."): v for k, v in load_checkpoint(best_ckpt)["state_dict"].items()}, str(best_ckpt))
    results["adapter"] = str(export_adapter(output_dir / "adapter", model, run, run.spec, config, results["best"]))
    results["status"] = "finished"  # only now: a run killed before the adapter is in place resumes and exports it
    writer.write()  # final wall time, after the loggers closed
    best = results["best"]
    if best:
        print(f"dev {monitor(run)} = {best['value']:.4f} (best epoch {best['epoch']}); "
              f"wall time {results['wall_time_s']:.0f} s; results: {output_dir / 'results.json'}")
    return results


def train_from_source(cfg: DictConfig) -> dict:
    """Few-shot transfer in one job: train on `source_task` in <run dir>/source (or reuse that run if it
    finished), then train on this task's few-shot sample starting from the source run's adapter."""
    out = Path(cfg.paths.output_dir)
    source_cfg, target_cfg = cfg.copy(), cfg.copy()
    with open_dict(source_cfg), open_dict(target_cfg):
        source_cfg.task, source_cfg.eval_tasks, source_cfg.paths.output_dir = cfg.source_task, [], str(out / "source")
        source_cfg.resume = None  # resume=<job dir> continues the target run; an unfinished source run starts over
        if (source_cfg.get("logger") or {}).get("wandb"):
            source_cfg.logger.wandb.name = f"{cfg.logger.wandb.name}-source"
        target_cfg.init_from = str(out / "source" / "adapter")
        for c in (source_cfg, target_cfg):
            c.source_task = None
    validate(source_cfg)  # both checked (files, label spaces) before anything trains
    validate(target_cfg)
    previous = out / "source" / "results.json"
    source = json.loads(previous.read_text()) if previous.is_file() else {}
    if source.get("status") == "finished" and (out / "source" / "adapter").is_dir():
        log.info("few-shot transfer: reusing the finished source run in %s", out / "source")
    else:
        log.info("few-shot transfer: training on the source task %s in %s", cfg.source_task.name, out / "source")
        source = train(source_cfg)
    summary = {"task": source.get("task"), "dir": str(out / "source"), "monitor": source.get("monitor"),
               "best": source.get("best"), "wall_time_s": source.get("wall_time_s")}
    return train(target_cfg, extra_header={"source": summary})


def write_counts(run: RunConfig, started: float) -> dict:
    """count_only=true: the trainable parameters of the configured run, counted on the meta device."""
    counts = count_on_meta(run.model, run.method, run.head, run.spec)
    results = {"status": "finished", "count_only": True, "experiment": run.experiment_name,
               "task": run.spec.name, "method": run.method.name, "model": run.model.name, "layer": run.layer,
               "head": run.head.type, "parameters": counts, "git_commit": git_commit(), "config": run.resolved}
    results["wall_time_s"] = round(time.perf_counter() - started, 3)
    atomic_write_json(Path(run.output_dir) / "results.json", results)
    print(f"{run.method.name} on {run.model.name}: {counts['method']:,} method + {counts['head']:,} head parameters "
          f"(of {counts['total']:,})")
    return results


def make_loggers(run: RunConfig, resumed: bool, wandb_id: str | None = None) -> list:
    """The `logger` group's loggers; a resumed run's CSV log goes to csv/resumed-<n>/, keeping the first,
    and a resumed run continues its W&B run (`wandb_id`, resume="allow")."""
    from hydra.utils import instantiate

    output_dir = Path(run.output_dir)
    loggers = []
    for node in run.loggers.values():
        if not node:
            continue
        extra = {}
        target = str(node.get("_target_", ""))
        if resumed and target.endswith("CSVLogger"):
            extra["version"] = f"resumed-{len(list((output_dir / node.get('name', 'csv')).glob('resumed-*'))) + 1}"
        if wandb_id and target.endswith("WandbLogger"):
            extra.update(id=wandb_id, resume="allow")
        loggers.append(instantiate(node, **extra))
    return loggers


def transfer_start(run: RunConfig, backbone_config) -> dict:
    """Few-shot transfer: the trained tensors of a run's adapter, checked against this run before any weights load."""
    from .. import tasks

    where = f"init_from={run.init_from!r}"
    config, weights = read_adapter(run.init_from)
    check_backbone(config, backbone_config, where)
    trained = (config["method"]["name"], config["layer"])
    if trained != (run.method.name, run.layer):
        raise UserError(f"{where} holds method={trained[0]} at layer {trained[1]}; "
                        f"this run is method={run.method.name} "
                        f"at layer {run.layer}: use the same method and layer")
    check_transfer(tasks.get_spec(typed(config["task"], TaskConfig, "adapter task")), run.spec, where)
    return weights


def rank_zero() -> bool:
    """Global rank 0 (or no distributed launch): the process that locks and writes the run dir."""
    return all(int(os.environ.get(k, 0) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def trainer_plugins() -> list:
    """Checkpoints written atomically; under SLURM, Lightning's own auto-requeue off: submitit's (the
    launcher's checkpoint() on its signal) is the one requeue mechanism (conf/hydra/launcher/slurm.yaml)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins

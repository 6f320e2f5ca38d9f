"""Entry point: `python -m idspam.run [group=choice ...] [key=value ...]`, `-m` for Hydra multirun.

The order matters for users: every check that needs no weights runs first (config values, task,
files, layer range), then the data is read and tokenised, and only then is the model loaded.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from . import tasks
from .adapter import check_backbone, export_adapter, read_adapter
from .backbone import load_backbone, load_config, load_tokenizer
from .checkpoints import RESUME_KEYS, checkpoint_callbacks, load_checkpoint, resume_checkpoint
from .config import check_layer, register_schemas, validate
from .data import TaskDataModule, cache_key
from .errors import UserError
from .lower_cache import LowerCache
from .model import build_model
from .module import PromptTuningModule
from .results import ResultsWriter, atomic_write_json, git_commit, package_versions

log = logging.getLogger("idspam")
GIT_COMMIT = git_commit()  # of the code this process loaded (a long multirun must not report a later checkout)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register_schemas()
# `${first_set:a,b}`: the first value that is not null (the run dir names the layer a method really uses)
OmegaConf.register_new_resolver("first_set", lambda *values: next((v for v in values if v is not None), None),
                                replace=True)
OmegaConf.register_new_resolver("minus", lambda a, b: a - b, replace=True)  # `${minus:${model.num_layers},1}`


def wandb_group(single: str) -> str:
    """W&B group: a multirun's jobs share one, named after the sweep dir (<experiment>-<time>), which is also
    what `idspam.report ... wandb=true` logs to; a single run gets `single` (<task>-<model>)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return single
    sweep = Path(HydraConfig.get().runtime.output_dir).parent
    return f"{sweep.parent.name}-{sweep.name}"


OmegaConf.register_new_resolver("wandb_group", wandb_group, replace=True)
# The frozen backbone is in eval mode on purpose (model.backbone_mode); Lightning warns about it.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # inside Lightning 2.6
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "Tip:" not in r.getMessage())


def train(cfg: DictConfig, extra_header: dict | None = None) -> dict:
    """Train and evaluate one configuration; returns the results written to results.json."""
    started = time.perf_counter()
    run = validate(cfg)
    if cfg.get("source_task"):
        return train_from_source(cfg)
    spec = tasks.get_spec(run.task)
    if cfg.get("count_only"):
        return write_counts(cfg, run, spec, started)
    backbone_config = load_config(run.model)
    check_layer(run.layer, backbone_config.num_hidden_layers, run.model.name)

    fingerprint = run_fingerprint(cfg)
    ckpt_path = resume_checkpoint(run.resume, fingerprint) if run.resume else None
    start = transfer_start(run, spec, backbone_config) if run.init_from else None

    L.seed_everything(run.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(run.model, backbone_config)
    data = TaskDataModule(run, spec, tokenizer, token_types=backbone_config.type_vocab_size > 1)
    data.setup()  # data problems surface here, before the weights are loaded
    torch.manual_seed(run.seed)  # random-weight backbones and method init: the same on every run and in predict
    backbone = load_backbone(run.model, backbone_config, with_mlm_head=run.head.type == "mlm")
    model = build_model(run, spec, backbone, tokenizer)
    if start is not None:
        model.load_trained_state(start, f"init_from={run.init_from!r}")
    if run.cache_lower:
        model.lower_cache = make_lower_cache(run, spec, data, backbone_config)
    module = PromptTuningModule(model, spec, run.optimizer, lr=run.method.lr,
                                evals=[(ev.key, ev.spec) for ev in data.evals])
    module.fingerprint = fingerprint

    output_dir = Path(run.output_dir)
    parameters = model.parameter_counts()
    monitor = f"{spec.eval_splits[0]}/{spec.metric}"
    header = {
        "experiment": cfg.get("experiment_name"), "task": spec.name, "method": run.method.name,
        "model": run.model.name, "layer": run.layer, "seed": run.seed, "head": run.head.type,
        "table_metric": monitor,  # the metric the paper's tables report for this task
        "eval_tasks": run.eval_tasks, "init_from": run.init_from, **(extra_header or {}),
        "parameters": parameters,
        "data": {split: len(ds) for split, ds in data.splits.items()},
        "versions": package_versions(), "git_commit": GIT_COMMIT,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    mode = "min" if spec.metric == "mse" else "max"
    writer = ResultsWriter(output_dir / "results.json", header, monitor, mode=mode, started=started)
    callbacks = [writer]
    if cfg.trainer.get("enable_checkpointing", True):
        callbacks += checkpoint_callbacks(output_dir / "checkpoints", monitor, mode)
    loggers = make_loggers(cfg, output_dir, resumed=bool(run.resume))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    log.info("training %s on %s with %s, layer %d: %s trainable parameters (head %s)%s", run.method.name, spec.name,
             run.model.name, run.layer, f"{parameters['trainable']:,}", run.head.type,
             f"; resuming from {ckpt_path}" if ckpt_path else "")
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                run_ = logger.experiment
                writer.results["wandb"] = {"project": run_.project, "group": run_.group, "id": run_.id,
                                           "name": run_.name}
                run_.finish()  # one W&B run per job: multirun jobs must not merge
    results = writer.results
    if not trainer.is_global_zero:  # multi-GPU: rank 0 exports the adapter and writes the results
        return results
    best_ckpt = output_dir / "checkpoints" / "best.ckpt"
    if best_ckpt.is_file():  # the adapter holds the weights of the best epoch, the one results report
        model.load_trained_state(
            {k.removeprefix("model."): v for k, v in load_checkpoint(best_ckpt)["state_dict"].items()}, str(best_ckpt))
    results["adapter"] = str(export_adapter(output_dir / "adapter", model, run, spec, backbone_config, results["best"]))
    writer.write()  # final wall time, after the loggers closed
    best = results["best"]
    if best:
        print(f"dev {monitor} = {best['value']:.4f} (best epoch {best['epoch']}); "
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


def write_counts(cfg: DictConfig, run, spec, started: float) -> dict:
    """count_only=true: the trainable parameters of the configured run, counted on the meta device."""
    from .params import count_on_meta

    counts = count_on_meta(run.model, run.method, run.head, spec)
    results = {"status": "finished", "count_only": True, "experiment": cfg.get("experiment_name"),
               "task": spec.name, "method": run.method.name, "model": run.model.name, "layer": run.layer,
               "head": run.head.type, "parameters": counts, "git_commit": GIT_COMMIT,
               "config": OmegaConf.to_container(cfg, resolve=True)}
    results["wall_time_s"] = round(time.perf_counter() - started, 3)
    atomic_write_json(Path(run.output_dir) / "results.json", results)
    print(f"{run.method.name} on {run.model.name}: {counts['method']:,} method + {counts['head']:,} head parameters "
          f"(of {counts['total']:,})")
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except Exception as e:
        if not multirun and not isinstance(e, UserError):
            raise  # a bug: the traceback is the useful part
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"error: {message}", file=sys.stderr)
        if multirun:  # record it in the job's own dir; the other jobs go on, the sweep summary lists it
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


def make_loggers(cfg: DictConfig, output_dir: Path, resumed: bool) -> list:
    """The `logger` group's loggers; a resumed run's CSV log goes to csv/resumed-<n>/, keeping the first."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not node:
            continue
        extra = {}
        if resumed and str(node.get("_target_", "")).endswith("CSVLogger"):
            extra["version"] = f"resumed-{len(list((output_dir / node.get('name', 'csv')).glob('resumed-*'))) + 1}"
        loggers.append(instantiate(node, **extra))
    return loggers


def make_lower_cache(run, spec, data: TaskDataModule, backbone_config) -> LowerCache:
    """In memory when it fits cache_lower_memory_gb, else memory-mapped under cache_dir/lower/<key>."""
    from dataclasses import asdict

    n, rows, length = backbone_config.hidden_size, len(data.splits["train"]), run.task.max_length
    same = run.layer == 0
    size_gb = rows * length * n * 4 * (1 if same else 2) / 2**30
    folder = None
    if size_gb > run.cache_lower_memory_gb:
        key = cache_key({
            "model": asdict(run.model), "seed": None if run.model.pretrained else run.seed, "layer": run.layer,
            "tokenize": data.tokenize.key(), "rows": rows, "subsample": [run.task.max_train_samples, run.seed],
            "data": tasks.source_fingerprint(spec, run.task, "train", run.data_dir),
        })
        folder = Path(run.cache_dir) / "lower" / key
    log.info("cache_lower: %.2f GB for %d training examples, %s", size_gb, rows,
             f"memory-mapped in {folder}" if folder else "in memory")
    return LowerCache(rows, length, n, same, folder)


def transfer_start(run, spec, backbone_config) -> dict:
    """Few-shot transfer: the trained tensors of a run's adapter, checked against this run before any weights load."""
    from .config import TaskConfig, check_transfer, typed

    where = f"init_from={run.init_from!r}"
    config, weights = read_adapter(run.init_from)
    check_backbone(config, backbone_config, where)
    trained = (config["method"]["name"], config["layer"])
    if trained != (run.method.name, run.layer):
        raise UserError(f"{where} holds method={trained[0]} at layer {trained[1]}; this run is method={run.method.name} "
                        f"at layer {run.layer}: use the same method and layer")
    check_transfer(tasks.get_spec(typed(config["task"], TaskConfig, "adapter task")), spec, where)
    return weights


def run_fingerprint(cfg: DictConfig) -> dict:
    """The resolved config sections a resumed run must share with the checkpoint's run."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    fingerprint = {key: resolved.get(key) for key in RESUME_KEYS}
    if isinstance(fingerprint.get("trainer"), dict):
        fingerprint["trainer"].pop("default_root_dir", None)
    return fingerprint


def check_group_choices(argv: list[str]) -> None:
    """Name the valid choices of a config group in one line (Hydra's own message is longer)."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~").split("@")[0]  # task@source_task=<task> is a task choice too
        if key not in groups or any(c in value for c in "()[]{}$*"):
            continue
        for choice in value.split(","):
            if choice and choice != "null" and not (CONF_DIR / key / f"{choice}.yaml").is_file():
                valid = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
                raise UserError(f"unknown {key} {choice!r}; valid: {', '.join(valid)}")


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()

"""Entry point: `python -m idspam.run [group=choice ...] [key=value ...]`, `-m` for Hydra multirun.

The order matters for users: every check that needs no weights runs first (config values, task,
files, layer range), then the data is read and tokenised, and only then is the model loaded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from . import tasks
from .adapter import check_backbone, export_adapter, read_adapter
from .backbone import (
    fit_config_to_tokenizer,
    is_decoder,
    load_backbone,
    load_config,
    load_tokenizer,
    max_positions,
)
from .checkpoints import (
    RESUME_KEYS,
    AtomicCheckpointIO,
    ConfigMismatch,
    RunInterrupted,
    RunLock,
    StopCheckpoint,
    StopOnSignal,
    attempt_record,
    checkpoint_callbacks,
    clear_checkpoints,
    find_run_dir,
    fingerprint_of,
    load_checkpoint,
    read_results,
    resume_checkpoint,
    resume_plan,
)
from .config import check_backbone_fits, register_schemas, validate
from .data import TaskDataModule, cache_key, label_word_ids
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


def run_dir(resume, prefix: str, stamp: str, *, _root_) -> str:
    """hydra.run.dir: resume=<dir> runs in that dir; resume=auto in the newest `<prefix>*` dir whose
    results.json holds this configuration (else a new `<prefix><stamp>`); otherwise `<prefix><stamp>`."""
    if resume in (None, "never"):
        return f"{prefix}{stamp}"
    if resume == "auto":
        return find_run_dir(prefix, current_fingerprint(_root_)) or f"{prefix}{stamp}"
    return str(resume)


OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
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
    # one process per run dir (a lock the kernel drops if the process dies); stop signals stop cleanly
    stop = StopOnSignal(cfg.get("stop_signals") or [])
    try:
        with RunLock(run.output_dir) if rank_zero() else nullcontext(), stop:
            try:
                return train_run(cfg, run, spec, started, stop, extra_header)
            except RunInterrupted as e:
                if rank_zero():
                    mark_interrupted(Path(run.output_dir), cfg, e)
                raise
    except RunInterrupted as e:
        print(f"interrupted: {e}; results.json status interrupted. Run the same command again to resume "
              f"({'the same -m command: finished jobs are kept' if is_multirun() else 'with resume=auto'})",
              file=sys.stderr)
        stop.hand_over()  # under submitit, its handler for its signal: checkpoint() and requeue (then exits)
        raise


def train_run(cfg: DictConfig, run, spec, started: float, stop: StopOnSignal, extra_header: dict | None) -> dict:
    """The training path of `train`, inside the run dir's lock and the stop-signal handlers."""
    backbone_config = load_config(run.model)
    check_backbone_fits(run, backbone_config)

    fingerprint = run_fingerprint(cfg)
    output_dir = Path(run.output_dir)
    plan = plan_run(cfg, run, output_dir, fingerprint)
    if plan["action"] == "reuse":
        record_attempt(output_dir, "reused")
        previous = plan["previous"]
        best = previous.get("best") or {}
        log.info("%s: finished before; its results are reused (resume=never trains it again)", output_dir)
        if best:
            print(f"dev {previous.get('monitor')} = {best['value']:.4f} (best epoch {best['epoch']}); finished "
                  f"before, reused; results: {output_dir / 'results.json'}")
        return previous
    ckpt_path = plan["ckpt"]
    record_attempt(output_dir, plan["action"])
    start = transfer_start(run, spec, backbone_config) if run.init_from else None

    L.seed_everything(run.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(run.model, backbone_config)
    fit_config_to_tokenizer(backbone_config, run.model, tokenizer)
    if run.head.type in ("mlm", "lm"):  # every label word one token, checked before any weights load
        label_word_ids(tokenizer, tasks.mlm_verbalizer(spec, run.task)[1])
    data = TaskDataModule(run, spec, tokenizer, token_types=getattr(backbone_config, "type_vocab_size", 0) > 1,
                          decoder=is_decoder(backbone_config), max_positions=max_positions(backbone_config))
    data.setup()  # data problems surface here, before the weights are loaded
    torch.manual_seed(run.seed)  # random-weight backbones and method init: the same on every run and in predict
    backbone = load_backbone(run.model, backbone_config, with_mlm_head=run.head.type in ("mlm", "lm", "generate"))
    model = build_model(run, spec, backbone, tokenizer)
    if start is not None:
        model.load_trained_state(start, f"init_from={run.init_from!r}")
    if run.cache_lower:
        model.lower_cache = make_lower_cache(run, spec, data, backbone_config, model)
        model.eval_caches = {ev.key: make_lower_cache(run, spec, data, backbone_config, model, ev.key)
                             for ev in data.evals if "row" in data.splits[ev.key].column_names}
    module = PromptTuningModule(model, spec, run.optimizer, lr=run.method.lr,
                                evals=[(ev.key, ev.spec) for ev in data.evals])
    module.fingerprint = fingerprint
    module.predictions_dir = run.output_dir  # head=generate: predictions.jsonl of the validation generations

    output_dir = Path(run.output_dir)
    parameters = model.parameter_counts()
    monitor = f"{spec.eval_splits[0]}/{spec.metric}"
    header = {
        "experiment": cfg.get("experiment_name"), "task": spec.name, "method": run.method.name,
        "model": run.model.name, "layer": run.layer, "seed": run.seed, "head": run.head.type,
        "table_metric": f"{spec.table_split}/{spec.metric}",  # the metric the paper's tables report for this task
        "eval_tasks": run.eval_tasks, "init_from": run.init_from, **(extra_header or {}),
        "parameters": parameters,
        "data": {split: len(ds) for split, ds in data.splits.items()},
        "versions": package_versions(), "git_commit": GIT_COMMIT,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "attempt": plan["action"], **({"history": plan["history"]} if plan["history"] else {}),
    }
    mode = "min" if spec.metric == "mse" else "max"
    writer = ResultsWriter(output_dir / "results.json", header, monitor, mode=mode, started=started)
    checkpointing = cfg.trainer.get("enable_checkpointing", True)
    every = cfg.get("checkpoint_every_n_steps")
    callbacks = [writer, StopCheckpoint(output_dir / "checkpoints", stop, every, save=checkpointing)]
    if checkpointing:
        callbacks += checkpoint_callbacks(output_dir / "checkpoints", monitor, mode)
    previous_wandb = ((plan["previous"] or {}).get("wandb") or {}).get("id") if ckpt_path else None
    loggers = make_loggers(cfg, output_dir, resumed=plan["action"] in ("resume", "rerun") or bool(run.resume),
                           wandb_id=previous_wandb)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                                     plugins=trainer_plugins())
    if trainer.world_size == 1:  # the training sampler continues a mid-epoch checkpoint's epoch (data.py)
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
    log.info("training %s on %s with %s, layer %d: %s trainable parameters (head %s)%s", run.method.name, spec.name,
             run.model.name, run.layer, f"{parameters['trainable']:,}", run.head.type,
             f"; resuming from {ckpt_path}" if ckpt_path else "")
    interrupted = None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except (SIGTERMException, RunInterrupted) as e:  # stopped by a signal, after StopCheckpoint saved
        interrupted = e
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                run_ = logger.experiment
                writer.results["wandb"] = {"project": run_.project, "group": run_.group, "id": run_.id,
                                           "name": run_.name}
                run_.finish(exit_code=1 if interrupted else None)  # one W&B run per job: jobs must not merge
    if interrupted is not None:
        writer.write()
        if isinstance(interrupted, RunInterrupted):
            raise interrupted
        at = writer.results.get("stopped_at") or {}
        raise RunInterrupted(stop.signum or 15, f"at step {at.get('step')} of {at.get('of_steps')} (epoch "
                                                f"{at.get('epoch')}), checkpoint {'saved' if checkpointing else 'off'}")
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
        if multirun and isinstance(e, ConfigMismatch):  # the dir holds another run: leave it as it is
            record_attempt(Path(HydraConfig.get().runtime.output_dir), "refused")
            return None
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


def make_loggers(cfg: DictConfig, output_dir: Path, resumed: bool, wandb_id: str | None = None) -> list:
    """The `logger` group's loggers; a resumed run's CSV log goes to csv/resumed-<n>/, keeping the first,
    and a resumed run continues its W&B run (`wandb_id`, resume="allow")."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not node:
            continue
        extra = {}
        if resumed and str(node.get("_target_", "")).endswith("CSVLogger"):
            extra["version"] = f"resumed-{len(list((output_dir / node.get('name', 'csv')).glob('resumed-*'))) + 1}"
        if wandb_id and str(node.get("_target_", "")).endswith("WandbLogger"):
            extra.update(id=wandb_id, resume="allow")
        loggers.append(instantiate(node, **extra))
    return loggers


def make_lower_cache(run, spec, data: TaskDataModule, backbone_config, model=None, split: str = "train") -> LowerCache:
    """The compact lower-stack cache (idspam/lower_cache.py) of one split: `train` (rows by the training
    batches' `index`) or an evaluation split's key (rows by `row`, the example's place in its file). In memory
    when it fits cache_lower_memory_gb, else on disk under cache_dir/lower/<key>, shared by every process with
    that key."""
    from dataclasses import asdict

    import transformers

    from . import __version__
    from .lower_cache import DTYPES, FORMAT, reads_embedding_output

    n, rows = backbone_config.hidden_size, len(data.splits[split])
    lengths = split_lengths(data.splits[split], split)
    compute = next(model.parameters()).dtype if model is not None else torch.float32
    dtype = compute if run.cache_lower_dtype == "auto" else DTYPES[run.cache_lower_dtype]
    store_embeddings = run.layer > 0 and reads_embedding_output(run.method)
    size_gb = sum(lengths) * n * dtype.itemsize * (2 if store_embeddings else 1) / 2**30
    folder, meta = None, {}
    if size_gb > run.cache_lower_memory_gb:
        if split == "train":
            split_run, split_spec, source, tokenize = run, spec, "train", data.tokenize
        else:
            ev = next(ev for ev in data.evals if ev.key == split)
            split_run, split_spec, source, tokenize = ev.run, ev.spec, ev.split, data.tokenizer_for(ev.run, ev.spec)
        meta = {
            "model": asdict(run.model), "seed": None if run.model.pretrained else run.seed, "layer": run.layer,
            "compute_dtype": str(compute), "storage_dtype": str(dtype), "store_embeddings": store_embeddings,
            "attn_implementation": getattr(backbone_config, "_attn_implementation", None),
            "tokenize": tokenize.key(), "rows": rows, "subsample": [run.task.max_train_samples, run.seed],
            "task": split_spec.name, "split": split, "task_config": asdict(split_run.task),
            "data": tasks.source_fingerprint(split_spec, split_run.task, source, run.data_dir),
            "version": __version__, "format": FORMAT, "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        folder = Path(run.cache_dir) / "lower" / cache_key(meta)
    log.info("cache_lower (%s): %.2f GB (%d real tokens of %d examples, %s, %s), %s", split, size_gb, sum(lengths),
             rows, str(dtype).removeprefix("torch."),
             "hidden + embedding output" if store_embeddings else "hidden states",
             f"on disk in {folder}" if folder else "in memory")
    return LowerCache(lengths, n, embeddings_are_hidden=run.layer == 0, store_embeddings=store_embeddings,
                      dtype=dtype, folder=folder, device=run.cache_lower_device, meta={"key": meta})


def split_lengths(split_data, split: str) -> list[int]:
    """Real tokens of each example, in the order of the cache's row numbers: the training split's `index`
    (its own order), an evaluation split's `row` (file order; the split itself is sorted by length)."""
    lengths = [len(ids) for ids in split_data["input_ids"]]
    if split == "train":
        return lengths
    out = [0] * len(lengths)
    for row, length in zip(split_data["row"], lengths, strict=True):
        out[row] = length
    return out


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


def rank_zero() -> bool:
    """Global rank 0 (or no distributed launch): the process that locks and writes the run dir."""
    return all(int(os.environ.get(k, 0) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def trainer_plugins() -> list:
    """Checkpoints written atomically; under SLURM, Lightning's own auto-requeue off: submitit's (the
    launcher's checkpoint() on its signal) is the one requeue mechanism (conf/hydra/launcher/slurm.yaml)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def plan_run(cfg: DictConfig, run, output_dir: Path, fingerprint: dict) -> dict:
    """resume=<dir>: that run's last.ckpt (its config checked); resume=auto (the default in a multirun) or
    never: `resume_plan` on the run dir; null in a single run: a new run."""
    mode = run.resume if run.resume is not None else ("auto" if is_multirun() else None)
    if mode in ("auto", "never"):
        plan = resume_plan(output_dir, fingerprint_of(OmegaConf.to_container(cfg, resolve=True)), mode)
        if plan["action"] == "resume":  # the checkpoint's own record of its config, checked too
            plan["ckpt"] = resume_checkpoint(str(output_dir), fingerprint)
        if plan["action"] == "rerun" and rank_zero():
            clear_checkpoints(output_dir)
        return plan
    if mode is None:
        return {"action": "new", "ckpt": None, "previous": None, "history": []}
    ckpt = resume_checkpoint(mode, fingerprint)
    previous = read_results(Path(mode))
    history = list((previous or {}).get("history") or []) + ([attempt_record(previous)] if previous else [])
    return {"action": "resume" if ckpt else "rerun", "ckpt": ckpt, "previous": previous, "history": history}


def record_attempt(output_dir: Path, action: str) -> None:
    """What this invocation did with the run dir (new, resume, rerun, reused, refused), for the sweep summary;
    beside Hydra's own files in .hydra/, so a reused run's results.json stays as it was."""
    if rank_zero():
        atomic_write_json(output_dir / ".hydra" / "attempt.json",
                          {"action": action, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def mark_interrupted(output_dir: Path, cfg: DictConfig, e: RunInterrupted) -> None:
    """results.json status interrupted (as the run wrote it, if it got that far; else a record with the
    config, so resume=auto and the summary know the job)."""
    record = read_results(output_dir) or {}
    if record.get("status") == "unreadable":
        record = {}
    if record.get("status") != "interrupted" or "stopped_at" not in record:
        epochs = record.get("epochs") or []
        record["stopped_at"] = {"epoch": epochs[-1]["epoch"] + 1 if epochs else 0,
                                "step": epochs[-1]["step"] if epochs else 0, "phase": "setup"}
    record.setdefault("config", OmegaConf.to_container(cfg, resolve=True))
    record.update(status="interrupted", error=f"RunInterrupted: {e}",
                  ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(output_dir / "results.json", record)


def current_fingerprint(root) -> dict:
    """fingerprint_of the config being composed, without resolving trainer.default_root_dir (the run dir,
    which is what is being decided)."""
    out = {}
    for key in RESUME_KEYS:
        node = root.get(key)
        if OmegaConf.is_dict(node) and key == "trainer":
            out[key] = {k: OmegaConf.to_container(node[k], resolve=True) if OmegaConf.is_config(node[k])
                        else node[k] for k in node if k != "default_root_dir"}
        else:
            out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return fingerprint_of(out)


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

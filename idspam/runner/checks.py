"""Every check that needs no model weights, run before anything heavy: `validate` turns the composed Hydra
config into the typed, checked `RunConfig` the rest of the runner reads (the task's spec included), or
raises a `UserError` with one line on the first problem.

Each group's own values are checked by its dataclass (`idspam.config`, `idspam.methods`); what is checked
here needs several groups at once (a task and its head, a method and the task's length, transfer pairs),
or the top-level keys. Checks that need the backbone's config follow in `idspam.model.check_backbone_fits`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import tasks
from ..config import (
    DataConfig,
    HeadConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    TaskConfig,
    TrainerConfig,
    typed,
)
from ..errors import UserError, check_choice, require_extra
from ..heads import HEADS
from ..methods import method_config
from ..model import check_layer


def validate(cfg: DictConfig) -> RunConfig:
    """The run the composed config describes, typed and checked (no weights, no data read)."""
    task = typed(cfg.get("task"), TaskConfig, "task")
    typed(cfg.get("trainer"), TrainerConfig, "trainer")  # its checks; Hydra instantiates the node itself
    check_choice("task", task.name, tasks.TASK_NAMES)
    run = RunConfig(
        task=task, model=typed(cfg.get("model"), ModelConfig, "model"), method=method_config(cfg.get("method")),
        head=typed(cfg.get("head"), HeadConfig, "head"), optimizer=typed(cfg.get("optimizer"), OptimizerConfig,
                                                                          "optimizer"),
        data=typed(cfg.get("data"), DataConfig, "data"), layer=run_layer(cfg), seed=integer(cfg, "seed", 0),
        data_dir=_path(cfg.get("data_dir")), cache_dir=_path(cfg.get("cache_dir") or "~/.cache/idspam"),
        output_dir=cfg.get("paths", {}).get("output_dir") or ".", resume=cfg.get("resume"),
        init_from=_path(cfg.get("init_from")),
        cache_lower_memory_gb=float(cfg.get("cache_lower_memory_gb", 4.0)),
        cache_lower_dtype=cfg.get("cache_lower_dtype", "auto"),
        cache_lower_device=cfg.get("cache_lower_device", "auto"),
        trainer=_container(cfg.get("trainer")), loggers=_container(cfg.get("logger")),
        callbacks=_container(cfg.get("callbacks")),
        experiment_name=cfg.get("experiment_name"), checkpoint_every_n_steps=cfg.get("checkpoint_every_n_steps"),
        stop_signals=list(cfg.get("stop_signals") or []), count_only=bool(cfg.get("count_only")),
        resolved=_container(cfg),
    )
    if run.method.layer is not None:  # a method defined at one layer (prompt tuning at the input, LoRA)
        run.layer = run.method.layer
    if run.model.num_layers is not None:
        check_layer(run.layer, run.model.num_layers, run.model.name)
    check_lengths(run)
    run.spec = tasks.get_spec(run.task)
    check_task_and_head(run)
    run.eval_tasks = check_eval_tasks(cfg.get("eval_tasks"), run.spec, run.data_dir)
    tasks.check_files(run.spec, run.task, run.data_dir)
    check_few_shot(cfg, run)
    if is_fsdp(run.trainer):
        check_fsdp(run, cfg.get("cache_lower", False))
    if any(str((node or {}).get("_target_", "")).endswith("WandbLogger") for node in run.loggers.values()):
        require_extra("wandb", "logger=wandb")  # before any weights or data load
    run.cache_lower = cache_lower(cfg.get("cache_lower", False), run)
    return run


def is_fsdp(trainer_cfg: dict) -> bool:
    """Whether a trainer config (a plain dict) selects idspam.runner.fsdp.FrozenFSDPStrategy (trainer=fsdp)."""
    strategy = (trainer_cfg or {}).get("strategy")
    return isinstance(strategy, dict) and str(strategy.get("_target_", "")).endswith("FrozenFSDPStrategy")


def check_fsdp(run: RunConfig, cache: object) -> None:
    """What trainer=fsdp cannot take, one line each, before any weights load (cache_lower=auto turns off)."""
    if cache is True:
        raise UserError("cache_lower=true is not supported with trainer=fsdp: a process whose batch is cached would "
                        "skip the sharded lower layers' all-gathers the other processes wait in; use cache_lower=false "
                        "(or auto, which is off under FSDP)")
    if run.model.quantization != "none":
        raise UserError(f"trainer=fsdp with model.quantization={run.model.quantization}: FSDP2 cannot shard "
                        "bitsandbytes' packed 4/8-bit weights; use trainer=ddp or trainer=gpu for a quantized "
                        "backbone, or model.quantization=none")
    if run.method.trains_frozen_weights:
        raise UserError(f"trainer=fsdp shards only frozen weights and replicates what trains; method="
                        f"{run.method.name} trains the backbone's own weights: use trainer=ddp")
    if run.data.group_by_length:
        raise UserError("trainer=fsdp with data.group_by_length=true is not supported (each process takes its "
                        "share of one shuffled order); use data.group_by_length=false")


def integer(cfg: DictConfig, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{key}={value!r} must be an integer")
    return value


def run_layer(cfg: DictConfig) -> int:
    return integer(cfg, "layer", 0)


def _path(value) -> str | None:
    return str(Path(value).expanduser()) if value else None


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def check_lengths(run: RunConfig) -> None:
    """A method with positions of its own (DEPT's update) covers every input position (and, under
    head=generate, the target's too)."""
    longest = run.task.max_length
    if HEADS[run.head.type].generative:
        longest += run.task.max_target_length
    covered = getattr(run.method, "max_length", longest)
    if covered < longest:
        what = ("task.max_length + task.max_target_length" if HEADS[run.head.type].generative
                else "task.max_length")
        raise UserError(f"method.max_length={covered} is shorter than {what}={longest}; the method must cover every "
                        f"input position: set method.max_length={longest}")


def check_task_and_head(run: RunConfig) -> None:
    spec, head = run.spec, HEADS[run.head.type]
    check_choice(f"task.metric for task {spec.name!r}:", spec.metric, spec.metric_names)
    if head.verbalizer:
        tasks.mlm_verbalizer(spec, run.task)  # raises if the task has no template / label words
    if head.generative and not spec.text_to_text:
        if spec.is_regression or spec.grouped:
            raise UserError(f"head=generate reads classification tasks as label words; task {spec.name!r} is "
                            f"{'a regression' if spec.is_regression else 'a grouped-choice'} task (use head=cls)")
        tasks.mlm_verbalizer(spec, run.task)  # the label words are the targets
    if spec.text_to_text and not head.generative:
        raise UserError(f"task={spec.name} is text-to-text: it needs head=generate (got head={head.name})")


def check_transfer(source, target, what: str) -> None:
    """Transfer needs the same label space: each label index must mean the same in both tasks."""
    if source.meaning != target.meaning or source.grouped != target.grouped:
        raise UserError(
            f"{what}: task {target.name!r} has labels {list(target.label_names or ['<regression>'])}, which do not "
            f"mean what the labels of {source.name!r} ({list(source.label_names or ['<regression>'])}) mean; transfer "
            "needs the same label space (e.g. sst2 <-> imdb, qqp <-> mrpc)")


def check_eval_tasks(names, spec, data_dir) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise UserError(f"eval_tasks={names!r} must be a list of task names, e.g. eval_tasks=[imdb]")
    for name in names:  # label spaces first, then files
        check_choice("eval_tasks:", name, tasks.SPECS)
        check_transfer(spec, tasks.SPECS[name], f"eval_tasks=[{name}]")
    for name in names:  # only their evaluation splits are read
        tasks.check_files(tasks.SPECS[name], TaskConfig(name=name), data_dir, tasks.SPECS[name].eval_splits)
    return list(names)


def check_few_shot(cfg: DictConfig, run: RunConfig) -> None:
    """Few-shot transfer (init_from, or task@source_task in one job): compatible tasks, k examples."""
    source_task = cfg.get("source_task")
    if source_task:
        if run.init_from:
            raise UserError("set one of init_from (a trained adapter) and source_task (train one first), not both")
        source = typed(source_task, TaskConfig, "source_task")
        check_choice("source_task", source.name, tasks.TASK_NAMES)
        check_transfer(tasks.get_spec(source), run.spec, f"source_task={source.name}")
    if run.init_from or source_task:
        k = cfg.get("few_shot_k", 100)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UserError(f"few_shot_k={k!r} must be a positive integer")
        if run.task.max_train_samples is None:
            run.task = replace(run.task, max_train_samples=k)  # few-shot: k training examples, drawn with the seed


def cache_lower(value, run: RunConfig) -> bool:
    """cache_lower=true|false|auto (auto: on where it applies, a frozen eval-mode stack below m that nothing
    trains)."""
    if value not in (True, False, "auto"):
        raise UserError(f"cache_lower={value!r}; valid: true, false, auto")
    applies = run.model.backbone_mode == "eval" and not run.method.trains_below and not is_fsdp(run.trainer)
    if value == "auto":
        return applies
    if value and run.model.backbone_mode != "eval":
        raise UserError("cache_lower=true needs model.backbone_mode=eval: with dropout below m the inputs to layer m "
                        "change every epoch")
    if value and run.method.trains_below:
        from ..methods import METHODS

        valid = ", ".join(name for name, cls in METHODS.items() if not cls.trains_below)
        raise UserError("cache_lower=true needs a method that trains nothing below its layer; "
                        f"method={run.method.name} does (valid: {valid})")
    return bool(value)

"""Typed views of the composed Hydra config, and the checks that run before any model is loaded.

Each config group has a dataclass here (methods keep theirs next to their module, as HF PEFT does).
`validate` merges the composed config into them, so an unknown key or a wrongly typed value is
reported as one line naming the key, and then checks values against their valid ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import UserError, check_choice

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


@dataclass
class ModelConfig:
    name: str = "minilm"
    name_or_path: str = PACKAGED_MINILM
    tokenizer: str | None = None  # defaults to name_or_path
    pretrained: bool = True  # false: random weights built from the config (no weight download)
    num_layers: int | None = None  # declared for early layer checks; the loaded config has the last word
    default_layer: int = 0
    arch: dict[str, Any] | None = None  # config kwargs (with model_type) used when pretrained=false
    backbone_mode: str = "eval"  # fixed mode of the frozen backbone: eval (no dropout) or train
    attn_implementation: str = "sdpa"  # sdpa | eager
    dtype: str = "float32"  # of the frozen backbone weights: float32 | bfloat16 | float16 (trained parts stay float32)
    padding_side: str | None = None  # right | left; null: right (heads find the last real token either way)
    prompt_positions: str = "before"  # rotary decoders: prompt position ids -t..-1 (before) or 0 (zero)
    # the last layer computes only the position the head reads (keys and values from every token): exact, cheaper
    prune_last_layer: bool = True
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass
class TaskConfig:
    name: str = "demo"
    max_length: int = 256
    max_train_samples: int | None = None  # seeded subsample of the training set
    max_eval_samples: int | None = None
    # A validation split carved from the training set (`heldout`): this many examples (COPA/MultiRC: questions),
    # drawn with heldout_seed alone (the same for every method and run seed), never trained on. It picks the best
    # epoch (and, in a tuning sweep, the hyperparameters); the dev set is still evaluated and reported at that epoch.
    heldout_samples: int | None = None
    heldout_seed: int = 0
    # task=csv: the user's own files
    train_file: str | None = None
    validation_file: str | None = None
    text_columns: list[str] = field(default_factory=list)
    label_column: str = "label"
    label_names: list[str] | None = None
    regression: bool = False  # task=csv: a numeric label (MSE loss, Pearson/Spearman)
    metric: str | None = None
    # head=mlm: override the task's template / label words
    template: str | None = None
    label_words: list[str] | None = None
    # task=csv_text (and any task under head=generate): text-to-text
    input_column: str = "input"
    target_column: str = "target"
    max_target_length: int = 64  # target tokens, the appended EOS included (longer targets are cut, EOS kept)
    chat_template: bool = True  # wrap the input in the tokenizer's chat template when it has one


@dataclass
class HeadConfig:
    # cls: trained head on the first input token (encoders) or the last real token (decoders);
    # mlm: an encoder's frozen MLM head at the <mask> token + label words;
    # lm: a decoder's frozen LM head at the next-token position + label words (LPT's generative verbalizer)
    type: str = "cls"
    dropout: float = 0.1
    dense: bool = False  # cls: add HF's dense+tanh layer before the output projection
    # generate: a decoder's frozen causal-LM head over every position, trained on the target tokens; these
    # generation settings drive validation and are saved with the adapter
    max_new_tokens: int = 32
    strategy: str = "greedy"  # greedy | sample | beam
    num_beams: int = 4  # strategy=beam
    temperature: float = 1.0  # strategy=sample
    top_p: float = 1.0  # strategy=sample
    eos_token: str | None = None  # null: the tokenizer's EOS (else its SEP)


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    scheduler: str = "linear"  # linear | cosine | constant (each after warm-up)
    warmup_ratio: float = 0.06


@dataclass
class DataConfig:
    batch_size: int = 16
    eval_batch_size: int = 64
    num_workers: int = 0
    group_by_length: bool = False  # training batches of similar length (less padding)


SCHEDULERS = ("linear", "cosine", "constant")
BACKBONE_MODES = ("eval", "train")
HEAD_TYPES = ("cls", "mlm", "lm", "generate")
STRATEGIES = ("greedy", "sample", "beam")
DTYPES = ("float32", "bfloat16", "float16")
PADDING_SIDES = ("right", "left")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def typed(node: Any, schema: type, where: str):
    """Merge a config node into its dataclass; one-line error on an unknown key or a bad type."""
    try:
        if isinstance(node, DictConfig):  # resolve interpolations against the whole config first
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node if node is not None else {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        valid = ""
        if isinstance(e, ConfigKeyError):
            valid = f" (valid keys: {', '.join(schema.__dataclass_fields__)})"
        raise UserError(f"bad config in {where}{'.' + key if key else ''}: {msg}{valid}") from None


@dataclass
class RunConfig:
    """Everything `train` needs, typed and checked."""

    task: TaskConfig
    model: ModelConfig
    method: Any
    head: HeadConfig
    optimizer: OptimizerConfig
    data: DataConfig
    layer: int
    seed: int
    data_dir: str | None
    cache_dir: str
    output_dir: str
    resume: str | None = None
    eval_tasks: list[str] = field(default_factory=list)  # zero-shot transfer: also evaluate on these tasks
    init_from: str | None = None  # few-shot transfer: start from this adapter (a run's adapter/ folder)
    cache_lower: bool = False
    cache_lower_memory_gb: float = 4.0
    cache_lower_dtype: str = "auto"  # auto (the backbone's compute dtype: exact) | float32 | bfloat16 | float16
    cache_lower_device: str = "auto"  # auto | cpu | gpu (memory cache held on the GPU when it fits)


def check_layer(layer: int, num_layers: int, model_name: str) -> None:
    if not 0 <= layer <= num_layers - 1:
        raise UserError(
            f"layer={layer} is out of range for model {model_name!r} with {num_layers} layers; "
            f"valid: 0..{num_layers - 1} (0 = prepend to the embedding output)"
        )


def check_backbone_fits(run: RunConfig, config) -> None:
    """Checks that need the backbone's config (not its weights): layer range, input length, head family."""
    from .backbone import is_decoder, max_positions

    check_layer(run.layer, config.num_hidden_layers, run.model.name)
    limit = max_positions(config)
    if limit and run.task.max_length > limit:
        raise UserError(f"task.max_length={run.task.max_length} is beyond the {limit} positions of model "
                        f"{run.model.name!r}; valid: 8..{limit}")
    decoder = is_decoder(config)
    if decoder and run.head.type == "mlm":
        raise UserError(f"head=mlm needs a masked-LM encoder; model {run.model.name!r} is a decoder "
                        "(valid heads here: cls, lm, generate)")
    if not decoder and run.head.type == "lm":
        raise UserError(f"head=lm reads a decoder's next-token logits; model {run.model.name!r} is an encoder "
                        "(valid heads here: cls, mlm)")
    if not decoder and run.head.type == "generate":
        raise UserError(f"head=generate trains a decoder's causal-LM head; model {run.model.name!r} is an encoder "
                        "(valid heads here: cls, mlm)")
    if run.head.type == "generate" and limit and run.task.max_length + run.task.max_target_length > limit:
        raise UserError(f"task.max_length={run.task.max_length} + task.max_target_length="
                        f"{run.task.max_target_length} is beyond the {limit} positions of model {run.model.name!r}: "
                        "the input and its target must fit together")


def validate(cfg: DictConfig) -> RunConfig:
    """All checks that need no model weights. Raises UserError with one line on the first problem."""
    from . import tasks
    from .methods import METHODS, method_config

    task = typed(cfg.get("task"), TaskConfig, "task")
    model = typed(cfg.get("model"), ModelConfig, "model")
    head = typed(cfg.get("head"), HeadConfig, "head")
    optimizer = typed(cfg.get("optimizer"), OptimizerConfig, "optimizer")
    data = typed(cfg.get("data"), DataConfig, "data")
    method = method_config(cfg.get("method"))

    check_choice("task", task.name, tasks.TASK_NAMES)
    check_choice("optimizer.scheduler", optimizer.scheduler, SCHEDULERS)
    check_choice("model.backbone_mode", model.backbone_mode, BACKBONE_MODES)
    check_choice("head.type", head.type, HEAD_TYPES)
    check_choice("model.dtype", model.dtype, DTYPES)
    check_choice("model.attn_implementation", model.attn_implementation, ATTN_IMPLEMENTATIONS)
    if model.padding_side is not None:
        check_choice("model.padding_side", model.padding_side, PADDING_SIDES)
    from .injection import PROMPT_POSITIONS

    check_choice("model.prompt_positions", model.prompt_positions, PROMPT_POSITIONS)
    if not 0.0 <= optimizer.warmup_ratio < 1.0:
        raise UserError(f"optimizer.warmup_ratio={optimizer.warmup_ratio} must be in [0, 1)")
    if optimizer.lr <= 0:
        raise UserError(f"optimizer.lr={optimizer.lr} must be positive")
    for name in ("batch_size", "eval_batch_size"):
        if getattr(data, name) < 1:
            raise UserError(f"data.{name}={getattr(data, name)} must be at least 1")
    if task.max_length < 8:
        raise UserError(f"task.max_length={task.max_length} must be at least 8")
    if task.heldout_samples is not None and task.heldout_samples < 1:
        raise UserError(f"task.heldout_samples={task.heldout_samples} must be a positive number of examples, or null")
    if getattr(method, "max_length", task.max_length) < task.max_length:
        raise UserError(f"method.max_length={method.max_length} is shorter than task.max_length={task.max_length}; "
                        "the method must cover every input position")

    layer = cfg.get("layer")
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise UserError(f"layer={layer!r} must be an integer")
    if method.layer is not None:  # a method defined at one layer (prompt tuning at the input, LoRA)
        layer = method.layer
    if model.num_layers is not None:
        check_layer(layer, model.num_layers, model.name)

    data_dir = cfg.get("data_dir")
    spec = tasks.get_spec(task)
    check_choice(f"task.metric for task {spec.name!r}:", spec.metric, spec.metric_names)
    if head.type in ("mlm", "lm"):
        tasks.mlm_verbalizer(spec, task)  # raises if the task has no template / label words
    if head.type == "generate":
        check_generation(head, task, spec, method)
    elif spec.text_to_text:
        raise UserError(f"task={spec.name} is text-to-text: it needs head=generate (got head={head.type})")
    eval_tasks = check_eval_tasks(cfg.get("eval_tasks"), spec, task, data_dir)
    tasks.check_files(spec, task, data_dir)

    source_task = cfg.get("source_task")
    if source_task:
        if cfg.get("init_from"):
            raise UserError("set one of init_from (a trained adapter) and source_task (train one first), not both")
        source = typed(source_task, TaskConfig, "source_task")
        check_choice("source_task", source.name, tasks.TASK_NAMES)
        check_transfer(tasks.get_spec(source), spec, f"source_task={source.name}")
    init_from = cfg.get("init_from")
    if init_from or source_task:
        k = cfg.get("few_shot_k", 100)
        if not isinstance(k, int) or k < 1:
            raise UserError(f"few_shot_k={k!r} must be a positive integer")
        if task.max_train_samples is None:
            task.max_train_samples = k  # few-shot: k training examples, drawn with the seed

    cache_lower = cfg.get("cache_lower", False)
    if cache_lower not in (True, False, "auto"):
        raise UserError(f"cache_lower={cache_lower!r}; valid: true, false, auto")
    if cache_lower == "auto":  # on where it applies: a frozen eval-mode stack below m that nothing trains
        cache_lower = model.backbone_mode == "eval" and not METHODS[method.name][1].grad_below
    if cache_lower and model.backbone_mode != "eval":
        raise UserError("cache_lower=true needs model.backbone_mode=eval: with dropout below m the inputs to layer m "
                        "change every epoch")
    if cache_lower and METHODS[method.name][1].grad_below:
        raise UserError(f"cache_lower=true needs a method that trains nothing below its layer; method={method.name} "
                        "does (valid: idspam, idspam_meanpool, lpt, prompt_tuning, ptuning, smop)")
    cache_dtype, cache_device = cfg.get("cache_lower_dtype", "auto"), cfg.get("cache_lower_device", "auto")
    if cache_dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise UserError(f"cache_lower_dtype={cache_dtype!r}; valid: auto, float32, bfloat16, float16")
    if cache_device not in ("auto", "cpu", "gpu"):
        raise UserError(f"cache_lower_device={cache_device!r}; valid: auto, cpu, gpu")

    output_dir = cfg.get("paths", {}).get("output_dir") or "."
    return RunConfig(
        task=task,
        model=model,
        method=method,
        head=head,
        optimizer=optimizer,
        data=data,
        layer=layer,
        seed=int(cfg.get("seed", 0)),
        data_dir=str(Path(data_dir).expanduser()) if data_dir else None,
        cache_dir=str(Path(cfg.get("cache_dir") or "~/.cache/idspam").expanduser()),
        output_dir=output_dir,
        resume=cfg.get("resume"),
        eval_tasks=eval_tasks,
        init_from=str(Path(init_from).expanduser()) if init_from else None,
        cache_lower=bool(cache_lower),
        cache_lower_memory_gb=float(cfg.get("cache_lower_memory_gb", 4.0)),
        cache_lower_dtype=cache_dtype,
        cache_lower_device=cache_device,
    )


def check_generation(head: HeadConfig, task: TaskConfig, spec, method) -> None:
    """head=generate: generation settings in range, a task it can read as text-to-text."""
    from . import tasks

    check_choice("head.strategy", head.strategy, STRATEGIES)
    for name in ("max_new_tokens", "num_beams"):
        if getattr(head, name) < 1:
            raise UserError(f"head.{name}={getattr(head, name)} must be at least 1")
    if head.temperature <= 0:
        raise UserError(f"head.temperature={head.temperature} must be positive")
    if not 0 < head.top_p <= 1:
        raise UserError(f"head.top_p={head.top_p} must be in (0, 1]")
    if task.max_target_length < 1:
        raise UserError(f"task.max_target_length={task.max_target_length} must be at least 1 (the EOS)")
    if not spec.text_to_text:
        if spec.is_regression or spec.grouped:
            raise UserError(f"head=generate reads classification tasks as label words; task {spec.name!r} is "
                            f"{'a regression' if spec.is_regression else 'a grouped-choice'} task (use head=cls)")
        tasks.mlm_verbalizer(spec, task)  # the label words are the targets
    longest = task.max_length + task.max_target_length
    if getattr(method, "max_length", longest) < longest:
        raise UserError(f"method.max_length={method.max_length} is shorter than task.max_length + "
                        f"task.max_target_length={longest}; head=generate feeds the input and its target together: set "
                        f"method.max_length={longest}")


def check_transfer(source, target, what: str) -> None:
    """Transfer needs the same label space: each label index must mean the same in both tasks."""
    if source.meaning != target.meaning or source.grouped != target.grouped:
        raise UserError(
            f"{what}: task {target.name!r} has labels {list(target.label_names or ['<regression>'])}, which do not "
            f"mean what the labels of {source.name!r} ({list(source.label_names or ['<regression>'])}) mean; transfer "
            "needs the same label space (e.g. sst2 <-> imdb, qqp <-> mrpc)")


def check_eval_tasks(names, spec, task: TaskConfig, data_dir) -> list[str]:
    from . import tasks

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


def register_schemas() -> None:
    """Make the dataclasses Hydra schemas: group YAMLs start from `/schema/<group>@_here_: <name>`,
    so every key exists (overridable from the command line) and is type-checked at compose time."""
    from hydra.core.config_store import ConfigStore

    from .methods import METHODS

    cs = ConfigStore.instance()
    for group, node in (("task", TaskConfig), ("model", ModelConfig), ("head", HeadConfig),
                        ("optimizer", OptimizerConfig)):
        cs.store(group=f"schema/{group}", name="base", node=node)
    for name, (config_cls, _) in METHODS.items():
        cs.store(group="schema/method", name=name, node=config_cls(name=name))

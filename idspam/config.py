"""The typed schema of a run: one dataclass per config group (methods keep theirs next to their module,
as HF PEFT does) and `RunConfig`, the whole checked run.

Each dataclass checks its own values in `__post_init__`, so an invalid config object cannot exist: a
bad value is one line naming the key and the valid values, whether the object comes from the Hydra
runner (`typed` merges a composed node into it: an unknown key or a wrong type is one line too), from
the Python API or from an adapter's saved config. Checks that need several groups at once live in the
runner (`idspam.runner.checks`); checks that need the backbone's config in `check_backbone_fits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import UserError, check_choice

if TYPE_CHECKING:
    from .tasks import TaskSpec

SCHEDULERS = ("linear", "cosine", "constant")
HEAD_TYPES = ("cls", "mlm", "lm", "generate")  # what each is: idspam.heads.HEADS
BACKBONE_MODES = ("eval", "train")
STRATEGIES = ("greedy", "sample", "beam")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # backbone.DTYPES maps them to torch dtypes
PADDING_SIDES = ("right", "left")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
CACHE_LOWER_DTYPES = ("auto", *DTYPE_NAMES)
CACHE_LOWER_DEVICES = ("auto", "cpu", "gpu")
QUANTIZATIONS = ("none", "nf4", "fp4", "int8")  # of the frozen backbone, through bitsandbytes (backbone.py)

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
    # the frozen backbone's linear layers in 4 bits (nf4, fp4: QLoRA's) or 8 bits (int8), through bitsandbytes;
    # compute in model.dtype. Random weights (pretrained=false) are quantized too (built, saved, reloaded).
    quantization: str = "none"
    # layers m..N-1 recompute their activations in the backward pass (torch.utils.checkpoint, non-reentrant)
    activation_checkpointing: bool = False

    def __post_init__(self):
        from .injection import PROMPT_POSITIONS

        check_choice("model.backbone_mode", self.backbone_mode, BACKBONE_MODES)
        check_choice("model.dtype", self.dtype, DTYPE_NAMES)
        check_choice("model.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.padding_side is not None:
            check_choice("model.padding_side", self.padding_side, PADDING_SIDES)
        check_choice("model.prompt_positions", self.prompt_positions, PROMPT_POSITIONS)
        check_choice("model.quantization", self.quantization, QUANTIZATIONS)
        if self.quantization != "none" and not has_bitsandbytes():
            raise UserError(f"model.quantization={self.quantization} needs bitsandbytes, which is not installed: "
                            "pip install 'idspam[quant]' (or model.quantization=none)")


def has_bitsandbytes() -> bool:
    """Is bitsandbytes importable (looked up, not imported: importing it is slow)?"""
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


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

    def __post_init__(self):
        if self.max_length < 8:
            raise UserError(f"task.max_length={self.max_length} must be at least 8")
        for name in ("max_train_samples", "max_eval_samples", "heldout_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"task.{name}={value} must be a positive number of examples, or null (all)")
        if self.max_target_length < 1:
            raise UserError(f"task.max_target_length={self.max_target_length} must be at least 1 (the EOS)")


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

    def __post_init__(self):
        check_choice("head.type", self.type, HEAD_TYPES)
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"head.dropout={self.dropout} must be in [0, 1)")
        check_choice("head.strategy", self.strategy, STRATEGIES)
        for name in ("max_new_tokens", "num_beams"):
            if getattr(self, name) < 1:
                raise UserError(f"head.{name}={getattr(self, name)} must be at least 1")
        if self.temperature <= 0:
            raise UserError(f"head.temperature={self.temperature} must be positive")
        if not 0 < self.top_p <= 1:
            raise UserError(f"head.top_p={self.top_p} must be in (0, 1]")


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    scheduler: str = "linear"  # linear | cosine | constant (each after warm-up)
    warmup_ratio: float = 0.06

    def __post_init__(self):
        check_choice("optimizer.scheduler", self.scheduler, SCHEDULERS)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"optimizer.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.lr <= 0:
            raise UserError(f"optimizer.lr={self.lr} must be positive")
        if self.weight_decay < 0:
            raise UserError(f"optimizer.weight_decay={self.weight_decay} must be at least 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"optimizer.betas={list(self.betas)} must be two values in [0, 1), e.g. [0.9,0.98]")
        if self.eps <= 0:
            raise UserError(f"optimizer.eps={self.eps} must be positive")


@dataclass
class DataConfig:
    batch_size: int = 16
    eval_batch_size: int = 64
    num_workers: int = 0
    group_by_length: bool = False  # training batches of similar length (less padding)

    def __post_init__(self):
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"data.{name}={getattr(self, name)} must be at least 1")
        if self.num_workers < 0:
            raise UserError(f"data.num_workers={self.num_workers} must be at least 0")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")
PRECISIONS = ("64", "32", "16", "bf16", "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true",
              "64-true", "transformer-engine", "transformer-engine-float16")
RUNNER_OWNED = ("logger", "callbacks", "plugins")  # the runner passes these (the logger and callbacks groups)


@dataclass
class TrainerConfig:
    """The `trainer` group: a `lightning.pytorch.Trainer`'s arguments, every one of them (Lightning's own
    defaults; conf/trainer/default.yaml sets the project's), so `trainer.accumulate_grad_batches=2` needs no
    `+`, a misspelt key is refused, and bad values are one line before any weights load. `logger`,
    `callbacks` and `plugins` are the runner's (the `logger` and `callbacks` groups); tests/test_hydra.py
    checks this list against the installed Lightning's signature."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: Any = "auto"  # str (auto, cpu, gpu, ...) or an Accelerator node
    strategy: Any = "auto"  # str (auto, ddp, fsdp, ...) or a Strategy node
    devices: Any = "auto"  # a count, a list of device ids, "auto", "-1" or "0,1"
    num_nodes: int = 1
    precision: Any = None  # 32-true, bf16-mixed, 16-mixed, ...
    fast_dev_run: Any = False  # bool or a number of batches
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: Any = None
    limit_train_batches: Any = None  # a fraction (float) or a number of batches (int)
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None  # bool or "warn"
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Any = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: str | None = None
    enable_autolog_hparams: bool = True
    model_registry: str | None = None

    def __post_init__(self):
        if isinstance(self.accelerator, str):
            check_choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        if self.precision is not None:
            check_choice("trainer.precision", str(self.precision), PRECISIONS)
        if (self.max_epochs is None and self.max_steps == -1) or (self.max_epochs is not None and self.max_epochs < 1):
            raise UserError(f"trainer.max_epochs={self.max_epochs} must be at least 1 (an untrained adapter is "
                            "not a run; count_only=true counts parameters without training)")
        for name in ("min_epochs", "min_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"trainer.{name}={getattr(self, name)} must be at least 0")
        if self.max_steps != -1 and self.max_steps < 1:
            raise UserError(f"trainer.max_steps={self.max_steps} must be at least 1, or -1 (no limit)")
        for name in ("num_nodes", "accumulate_grad_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"trainer.{name}={getattr(self, name)} must be at least 1")
        for name in ("check_val_every_n_epoch", "log_every_n_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"trainer.{name}={getattr(self, name)} must be at least 1")
        if self.num_sanity_val_steps is not None and self.num_sanity_val_steps < -1:
            raise UserError(f"trainer.num_sanity_val_steps={self.num_sanity_val_steps} must be -1 (all) or more")
        if self.gradient_clip_val is not None and self.gradient_clip_val < 0:
            raise UserError(f"trainer.gradient_clip_val={self.gradient_clip_val} must be at least 0, or null (off)")
        if self.gradient_clip_algorithm is not None:
            check_choice("trainer.gradient_clip_algorithm", self.gradient_clip_algorithm, ("norm", "value"))
        check_devices(self.devices)
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                     "overfit_batches"):
            check_batches(f"trainer.{name}", getattr(self, name))
        if self.reload_dataloaders_every_n_epochs < 0:
            raise UserError(f"trainer.reload_dataloaders_every_n_epochs={self.reload_dataloaders_every_n_epochs} "
                            "must be at least 0")


def check_devices(devices) -> None:
    """trainer.devices: a positive count, -1 (all), "auto", a non-empty list of ids, or "0,1"."""
    bad = UserError(f"trainer.devices={devices!r} must be a positive number of devices, -1 (all), auto, "
                    "or a list of device ids such as [0,1]")
    if isinstance(devices, bool):
        raise bad
    if isinstance(devices, str):
        if devices == "auto":
            return
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if not parts or not all(p.lstrip("-").isdigit() for p in parts):
            raise bad
        devices = int(parts[0]) if len(parts) == 1 and "," not in devices else [int(p) for p in parts]
    if isinstance(devices, int):
        if devices == 0 or devices < -1:
            raise bad
    elif isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices):
            raise bad
    else:
        raise bad


def check_batches(name: str, value) -> None:
    """A limit of batches: null, a fraction in [0, 1] (float) or a count >= 0 (int)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name}={value!r} must be a fraction in [0, 1] or a number of batches")
    if value < 0 or (isinstance(value, float) and value > 1):
        raise UserError(f"{name}={value} must be a fraction in [0, 1] or a number of batches (at least 0)")


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
    """A whole run, typed and checked (`idspam.runner.checks.validate` builds it from the composed config):
    everything the runner's `train_run` reads, the task's spec included."""

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
    spec: TaskSpec | None = None  # the task's spec (label names, metric, files), from `task`
    # the runner's own sections, as plain containers (Hydra instantiates them)
    trainer: dict = field(default_factory=dict)  # a lightning.Trainer's arguments (`_target_`)
    loggers: dict = field(default_factory=dict)  # the `logger` group: name -> logger node
    callbacks: dict = field(default_factory=dict)  # the `callbacks` group: name -> Lightning callback node
    experiment_name: str | None = None
    checkpoint_every_n_steps: int | None = None
    stop_signals: list = field(default_factory=list)
    count_only: bool = False
    resolved: dict = field(default_factory=dict)  # the whole resolved config (results.json, W&B)

    def __post_init__(self):
        check_choice("cache_lower_dtype", self.cache_lower_dtype, CACHE_LOWER_DTYPES)
        check_choice("cache_lower_device", self.cache_lower_device, CACHE_LOWER_DEVICES)
        if self.seed < 0:
            raise UserError(f"seed={self.seed} must be at least 0")



"""The PEFT configs of idspam's prompt methods: one `PeftConfig` dataclass per method that has a PEFT form
(its `peft_type` trait), whose fields are the method's own options (from its `idspam.methods` config: one
source of truth) plus `layer`, `backbone_mode`, `prompt_positions` and PEFT's `modules_to_save`.

Construction checks everything once: the method's options through its config's `__post_init__` (the
checked object is kept, `method_config()` returns it), the PEFT fields here.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, make_dataclass

from peft import PeftConfig

from ..config import BACKBONE_MODES
from ..errors import UserError, check_choice
from ..methods import METHODS
from ..methods.base import MethodConfig


@dataclass
class PromptInjectionConfig(PeftConfig):
    """What every idspam PEFT method shares; a subclass per method adds that method's options
    (the fields of its `idspam.methods` config, minus `name` and `lr`: the optimizer sets the rate).

    layer: the injection layer m (0..N-1): the prompt is prepended to the hidden states entering
        layer m, layers below m run without autograd.
    backbone_mode: "eval" (default, as the runner): the frozen backbone's dropout stays off in
        training; "train": it follows the model's train/eval mode.
    prompt_positions: rotary decoders: the prompt's position ids, -t..-1 ("before") or 0 ("zero").
    modules_to_save: modules trained and saved besides the prompt (PEFT's option; on
        sequence classification PEFT adds the model's classifier itself).
    head: a run's trained head (`head=cls`), as a run's adapter carries it: {"module": "classifier" or
        "score", "num_labels", "dropout", "dense", "read_at": "first" or "last"}. On a
        `*ForSequenceClassification` model the tuner puts this head in place of the model's classification
        path (the `module` it replaces; pooler, pre-classifier and the model's own pooling are bypassed), so
        the logits are the run's. None (the default): the model's own classifier.
    """

    layer: int | None = None
    backbone_mode: str = "eval"
    prompt_positions: str = "before"
    modules_to_save: list[str] | None = None
    head: dict | None = None

    method_name = ""  # class attribute (not a field): the idspam.methods name

    @classmethod
    def method_peft_type(cls) -> str:
        """The `peft_type` this config class writes (its method's trait)."""
        return METHODS[cls.method_name].peft_type

    def __post_init__(self):
        from ..injection import PROMPT_POSITIONS

        method_cls = METHODS[self.method_name]
        self.peft_type = self.method_peft_type()
        super().__post_init__()
        check_choice("backbone_mode", self.backbone_mode, BACKBONE_MODES)
        check_choice("prompt_positions", self.prompt_positions, PROMPT_POSITIONS)
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 0):
            raise UserError(f"layer={self.layer!r} must be a layer index, 0 or more (the layer m the prompt enters)")
        if self.head is not None:
            check_head(self.head)
        names = {f.name for f in fields(method_cls)} - {"name", "lr"}
        # the method's own checks, with its own messages; kept (not a dataclass field: never saved)
        self._method = method_cls(name=self.method_name, **{k: getattr(self, k) for k in names})

    def method_config(self) -> MethodConfig:
        """The `idspam.methods` config these options describe (checked when this config was made)."""
        return self._method


HEAD_KEYS = ("module", "num_labels", "dropout", "dense", "read_at")


def check_head(head: dict) -> None:
    """One line for a `head` that is not the form a run's adapter writes."""
    if not isinstance(head, dict) or sorted(head) != sorted(HEAD_KEYS):
        raise UserError(f"head={head!r} must be a dict with the keys {', '.join(HEAD_KEYS)} (a run's head=cls)")
    check_choice("head.module", head["module"], ("classifier", "score"))
    check_choice("head.read_at", head["read_at"], ("first", "last"))
    if not isinstance(head["num_labels"], int) or head["num_labels"] < 1:
        raise UserError(f"head.num_labels={head['num_labels']!r} must be a positive int")


def _config_class(method: str, class_name: str, doc: str) -> type[PromptInjectionConfig]:
    """A PEFT config dataclass with the options of `idspam.methods`' config of `method` (one source of truth)."""
    extra = []
    for f in fields(METHODS[method]):
        if f.name in ("name", "lr"):
            continue
        if f.name == "layer" and f.default is None:
            continue  # PromptInjectionConfig.layer
        spec = field(default=f.default) if f.default is not MISSING else field(default_factory=f.default_factory)
        extra.append((f.name, f.type, spec))
    return make_dataclass(class_name, extra, bases=(PromptInjectionConfig,),
                          namespace={"method_name": method, "__doc__": doc, "__module__": __name__})


IDSPAMConfig = _config_class("idspam", "IDSPAMConfig", """ID-SPAM (input-dependent soft prompt, attention
    over the input's token embeddings, then a bottleneck MLP) as a PEFT method. `layer` is the injection
    layer m; the other options (prompt_length=10, bottleneck=128, attention, num_heads, head_dim, qkv_bias,
    mlp_bias, final_relu, embedding_source, dropout) are those of `idspam.methods.idspam.IDSPAMConfig`.""")
IDSPAMMeanPoolConfig = _config_class("idspam_meanpool", "IDSPAMMeanPoolConfig", """ID-SPAM's ablation
    without attention (the masked mean of the token embeddings).""")
LPTConfig = _config_class("lpt", "LPTConfig", """Late Prompt Tuning: a prompt generated from the hidden
    state of the first token entering layer m (prompt_length=10, bottleneck=256, bias, dropout, static).""")
LayerPromptTuningConfig = _config_class("prompt_tuning", "LayerPromptTuningConfig", """Prompt tuning through
    idspam's engine: t trained vectors prepended to the embedding layer's output (layer=0) or before layer m.
    Unlike PEFT's own PromptTuningConfig, the real tokens keep their positions.""")
LayerPTuningConfig = _config_class("ptuning", "LayerPTuningConfig", """P-tuning (PEFT's prompt encoder,
    MLP or LSTM) through idspam's engine, at the embedding layer's output (layer=0) or before layer m.""")

# method name -> its PEFT config class: every method with a `peft_type`
CONFIGS: dict[str, type[PromptInjectionConfig]] = {
    cls.method_name: cls
    for cls in (IDSPAMConfig, IDSPAMMeanPoolConfig, LPTConfig, LayerPromptTuningConfig, LayerPTuningConfig)
}


def peft_config_for(method_cfg: MethodConfig, layer: int, **options) -> PromptInjectionConfig:
    """The PEFT config of an `idspam.methods` config (e.g. a run's), injected before `layer`."""
    if method_cfg.name not in CONFIGS:
        raise UserError(f"method {method_cfg.name!r} has no PEFT form; methods with one: {', '.join(CONFIGS)} "
                        "(and LoRA, PEFT's own)")
    cls = CONFIGS[method_cfg.name]
    names = {f.name for f in fields(cls)}
    values = {f.name: getattr(method_cfg, f.name) for f in fields(method_cfg) if f.name in names}
    return cls(**{**values, "layer": layer, **options})

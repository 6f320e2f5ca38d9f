"""ID-SPAM, LPT and idspam's prompt tuning / P-tuning as Hugging Face PEFT methods.

    from peft import get_peft_model, PeftModel
    import idspam                                    # registers the methods with PEFT
    model = get_peft_model(hf_model, idspam.IDSPAMConfig(layer=3, prompt_length=10))
    model.save_pretrained("out/adapter")             # adapter_config.json + adapter_model.safetensors
    PeftModel.from_pretrained(hf_model_again, "out/adapter")

How it plugs in. PEFT 0.21 has no public registration for a new method type (`register_peft_method`
accepts only names already in its `PeftType` enum), so this module writes its types into PEFT's
own type tables (`peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING`, `..._TUNER_MAPPING`,
`..._PREFIX_MAPPING`, the dicts `register_peft_method` fills) under string keys (`IDSPAM`,
`IDSPAM_LPT`, ...; `PeftType` is a `str` enum, so PEFT's lookups by `config.peft_type` find them).
The tuner is a `peft.tuners.tuners_utils.BaseTuner` whose one tuner layer, `PromptInjectionLayer`,
is attached to the backbone (`model.base_model` in transformers' sense: `BertModel`, `LlamaModel`,
...) as `idspam_injection`, and the backbone's `forward` is routed through it. That layer holds one
prompt method per adapter (`idspam_prompt.<adapter>`) and runs the project's injection engine
(`PromptInjectedEncoder`, through `PromptModel.hidden_states`, the code path the runner trains with):
the lower stack without autograd, the prompt, the upper stack on [prompt ; hidden]. The model's own
head (a `*ForSequenceClassification` classifier, a causal-LM head) reads the real tokens' final
hidden states; PEFT's `modules_to_save` trains and saves a classifier as for any PEFT method.

These are PEFT internals: the integration is tested on PEFT `PEFT_MINOR` only and refuses another
minor version with one line. Limits: one prompt adapter active at a time (several can be loaded and
switched with `set_adapter`), no merging into weights, no mixing with LoRA in one PeftModel,
`output_hidden_states`/`output_attentions` are not returned while a prompt is active.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .methods import METHODS
from .methods.base import MethodConfig

PEFT_MINOR = "0.21"
PREFIX = "idspam_"
ATTRIBUTE = "idspam_injection"  # the tuner layer's name on the backbone

# method name (idspam.methods) -> PEFT type (the `peft_type` in adapter_config.json)
PEFT_TYPES = {
    "idspam": "IDSPAM",
    "idspam_meanpool": "IDSPAM_MEANPOOL",
    "lpt": "IDSPAM_LPT",
    "prompt_tuning": "IDSPAM_PROMPT_TUNING",
    "ptuning": "IDSPAM_PTUNING",
}


def check_peft_version() -> None:
    """One line, naming both versions, when the installed PEFT is not the minor version this is tested on."""
    import peft

    minor = ".".join(peft.__version__.split(".")[:2])
    if minor != PEFT_MINOR:
        raise UserError(f"idspam's PEFT integration uses PEFT internals tested on peft {PEFT_MINOR}.x only; this "
                        f"is peft {peft.__version__}: pip install 'peft>={PEFT_MINOR},<{PEFT_MINOR[:-2]}"
                        f".{int(PEFT_MINOR.split('.')[1]) + 1}'")


check_peft_version()

from peft import PeftConfig  # noqa: E402 - after the version check, which names the version on a mismatch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer  # noqa: E402
from peft.utils.other import set_additional_trainable_modules  # noqa: E402

# ---------------------------------------------------------------------------------------------- configs

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
    """

    layer: int | None = None
    backbone_mode: str = "eval"
    prompt_positions: str = "before"
    modules_to_save: list[str] | None = None

    method_name = ""  # class attribute (not a field): the idspam.methods name

    def __post_init__(self):
        self.peft_type = PEFT_TYPES[self.method_name]
        super().__post_init__()
        if self.backbone_mode not in ("eval", "train"):
            raise UserError(f"backbone_mode={self.backbone_mode!r}; valid: eval, train")
        self.method_config()  # checks the method's options now, with the method's own messages

    def method_config(self) -> MethodConfig:
        """The `idspam.methods` config these options describe (what `build_method` takes)."""
        cls = METHODS[self.method_name][0]
        names = {f.name for f in fields(cls)} - {"name", "lr"}
        cfg = cls(name=self.method_name, **{k: getattr(self, k) for k in names})
        cfg.check()
        return cfg


def _config_class(method: str, class_name: str, doc: str) -> type[PromptInjectionConfig]:
    """A PEFT config dataclass with the options of `idspam.methods`' config of `method` (one source of truth)."""
    extra = []
    for f in fields(METHODS[method][0]):
        if f.name in ("name", "lr"):
            continue
        if f.name == "layer" and f.default is None:
            continue  # PromptInjectionConfig.layer
        spec = field(default=f.default) if f.default is not MISSING else field(default_factory=f.default_factory)
        extra.append((f.name, f.type, spec))
    cls = make_dataclass(class_name, extra, bases=(PromptInjectionConfig,),
                         namespace={"method_name": method, "__doc__": doc, "__module__": __name__})
    return cls


IDSPAMConfig = _config_class("idspam", "IDSPAMConfig", """ID-SPAM (input-dependent soft prompt, attention
    over the input's token embeddings, then a bottleneck MLP) as a PEFT method. `layer` is the injection
    layer m; the other options (prompt_length=10, bottleneck=128, attention, num_heads, head_dim, qkv_bias,
    mlp_bias, final_relu, embedding_source, dropout) are those of `idspam.methods.IDSPAMConfig`.""")
IDSPAMMeanPoolConfig = _config_class("idspam_meanpool", "IDSPAMMeanPoolConfig", """ID-SPAM's ablation
    without attention (the masked mean of the token embeddings); set attention=False.""")
LPTConfig = _config_class("lpt", "LPTConfig", """Late Prompt Tuning: a prompt generated from the hidden
    state of the first token entering layer m (prompt_length=10, bottleneck=256, bias, dropout, static).""")
LayerPromptTuningConfig = _config_class("prompt_tuning", "LayerPromptTuningConfig", """Prompt tuning through
    idspam's engine: t trained vectors prepended to the embedding layer's output (layer=0) or before layer m.
    Unlike PEFT's own PromptTuningConfig, the real tokens keep their positions.""")
LayerPTuningConfig = _config_class("ptuning", "LayerPTuningConfig", """P-tuning (PEFT's prompt encoder,
    MLP or LSTM) through idspam's engine, at the embedding layer's output (layer=0) or before layer m.""")

CONFIGS: dict[str, type[PromptInjectionConfig]] = {
    "idspam": IDSPAMConfig, "idspam_meanpool": IDSPAMMeanPoolConfig, "lpt": LPTConfig,
    "prompt_tuning": LayerPromptTuningConfig, "ptuning": LayerPTuningConfig,
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


# ---------------------------------------------------------------------------------------------- the layer

def backbone_of(model: nn.Module) -> nn.Module:
    """The transformer the engine runs (transformers' `base_model`: BertModel, LlamaModel...); the model
    itself when it is one."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


class PromptInjectionLayer(nn.Module, BaseTunerLayer):
    """The tuner layer: one prompt method per adapter (`idspam_prompt`), and the engine that injects the
    active one. It sits on the backbone as `idspam_injection`; the backbone's forward calls `forward_backbone`."""

    adapter_layer_names = ("idspam_prompt",)
    other_param_names = ("idspam_layer",)

    def __init__(self, backbone: nn.Module, prompt_positions: str = "before"):
        from .injection import PromptInjectedEncoder

        nn.Module.__init__(self)
        self.idspam_prompt = nn.ModuleDict()
        self.idspam_layer: dict[str, int] = {}
        engine = (PromptInjectedEncoder(backbone, prompt_positions) if prompt_positions != "before"
                  else PromptInjectedEncoder(backbone))
        self._engine = (engine,)  # a tuple: kept out of the module tree (no copy of the backbone)
        self._models: dict[str, Any] = {}  # adapter -> PromptModel (engine, method, no head): the runner's code path
        self._backbone_mode: dict[str, str] = {}
        self._active_adapter = "default"
        self._disable_adapters = False
        self.merged_adapters = []

    @property
    def engine(self):
        return self._engine[0]

    def update_layer(self, adapter_name: str, config: PromptInjectionConfig) -> None:
        from .methods import build_method
        from .model import PromptModel

        engine = self.engine
        if config.layer is None:
            raise UserError(f"{type(config).__name__}(layer=...) is required: the layer m the prompt is injected "
                            f"before, 0..{engine.num_layers - 1}")
        if not 0 <= config.layer < engine.num_layers:
            raise UserError(f"layer={config.layer} is out of range for this {engine.num_layers}-layer model; "
                            f"valid: 0..{engine.num_layers - 1}")
        method_cfg = config.method_config()
        method_cfg.check_hidden(engine.hidden_size)
        if getattr(engine, "prompt_positions", config.prompt_positions) != config.prompt_positions:
            raise UserError(f"adapter {adapter_name!r} has prompt_positions={config.prompt_positions!r}, the adapters "
                            f"already on this model {engine.prompt_positions!r}; they share one engine")
        # trained parts stay float32 (the engine hands them float32 states on a bf16/fp16 backbone), as in the runner
        method = build_method(method_cfg, engine.hidden_size).to(device=next(engine.base.parameters()).device)
        method.attach(engine)
        if method.grad_below or method.input_embeds is not None or method.backbone_modules(engine):
            raise UserError(f"method {method_cfg.name!r} trains inside the backbone; it has no PEFT form here")
        self.idspam_prompt[adapter_name] = method
        self.idspam_layer[adapter_name] = config.layer
        self._backbone_mode[adapter_name] = config.backbone_mode
        self._models[adapter_name] = PromptModel(engine, method, nn.Identity(), config.layer, config.backbone_mode)
        self.set_adapter(self.active_adapters)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._models.pop(adapter_name, None)
        self._backbone_mode.pop(adapter_name, None)

    def active_prompt(self) -> str | None:
        """The adapter whose prompt is injected now (None: adapters disabled or none active)."""
        if self.disable_adapters:
            return None
        active = [a for a in self.active_adapters if a in self.idspam_prompt]
        if len(active) > 1:
            raise UserError(f"adapters {active} are active together; idspam injects one prompt at a time "
                            "(model.set_adapter(<name>))")
        return active[0] if active else None

    def forward_backbone(self, adapter: str, input_ids, attention_mask, token_type_ids, kwargs: dict):
        from transformers.modeling_outputs import (
            BaseModelOutputWithPastAndCrossAttentions,
            BaseModelOutputWithPoolingAndCrossAttentions,
        )

        if kwargs.get("inputs_embeds") is not None:
            raise UserError("inputs_embeds is not supported with an idspam prompt adapter active: pass input_ids")
        cache = kwargs.get("past_key_values")
        if cache is not None and (not hasattr(cache, "get_seq_length") or cache.get_seq_length() > 0):
            raise UserError("a KV cache is not supported with an idspam prompt adapter active (the prompt depends on "
                            "the whole input): generate(..., use_cache=False), the default after wrapping")
        # position_ids / cache_position: the engine places the real tokens itself, from the attention mask
        if input_ids is None:
            raise UserError("an idspam prompt adapter needs input_ids (not inputs_embeds)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        hidden = self._models[adapter].hidden_states(batch)
        backbone = self.engine.base
        pooler = getattr(backbone, "pooler", None)
        if pooler is not None:
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden, pooler_output=pooler(hidden))
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)


def _attach(backbone: nn.Module, prompt_positions: str = "before") -> PromptInjectionLayer:
    """Put a PromptInjectionLayer on the backbone and route its forward (and train) through it."""
    layer = getattr(backbone, ATTRIBUTE, None)
    if isinstance(layer, PromptInjectionLayer):
        return layer
    layer = PromptInjectionLayer(backbone, prompt_positions)
    setattr(backbone, ATTRIBUTE, layer)
    cls = type(backbone)
    signature = inspect.signature(cls.forward)

    def forward(self, *args, **kwargs):
        adapter = layer.active_prompt()
        if adapter is None:
            return cls.forward(self, *args, **kwargs)
        named = signature.bind(self, *args, **kwargs).arguments
        named.pop("self", None)
        named.update(named.pop("kwargs", None) or {})
        return layer.forward_backbone(adapter, named.pop("input_ids", None), named.pop("attention_mask", None),
                                      named.pop("token_type_ids", None), named)

    def train(self, mode: bool = True):
        """The frozen backbone keeps eval mode (backbone_mode=eval, the default) while the prompt trains."""
        adapter = layer.active_prompt()
        follow = adapter is None or layer._backbone_mode.get(adapter) == "train"
        nn.Module.train(self, mode and follow)
        layer.train(mode)
        return self

    backbone.forward = types.MethodType(forward, backbone)
    backbone.train = types.MethodType(train, backbone)
    return layer


def _detach(backbone: nn.Module) -> None:
    if isinstance(getattr(backbone, ATTRIBUTE, None), PromptInjectionLayer):
        delattr(backbone, ATTRIBUTE)
    for name in ("forward", "train"):
        backbone.__dict__.pop(name, None)


# ---------------------------------------------------------------------------------------------- the tuner

class PromptInjectionModel(BaseTuner):
    """The PEFT tuner of every idspam prompt method (PEFT_TYPE_TO_TUNER_MAPPING points each type here)."""

    prefix: str = PREFIX
    tuner_layer_cls = PromptInjectionLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, *args, **kwargs):  # BaseTuner's abstract hook; inject_adapter does the work
        raise NotImplementedError

    def _check_target_module_exists(self, *args, **kwargs):
        return False

    def _pre_injection_hook(self, model: nn.Module, config: PeftConfig, adapter_name: str) -> None:
        """Without a task_type, a `*ForSequenceClassification` model gets what PEFT gives it under SEQ_CLS: its
        classifier trains and is saved (modules_to_save)."""
        if config.task_type is None and type(model).__name__.endswith("ForSequenceClassification"):
            config.task_type = "SEQ_CLS"
            heads = [name for name in ("classifier", "score") if isinstance(getattr(model, name, None), nn.Module)]
            config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), *heads]))
        elif config.task_type is None and type(model).__name__.endswith("ForCausalLM"):
            config.task_type = "CAUSAL_LM"

    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True,
                       low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        config = self.peft_config[adapter_name]
        if not isinstance(config, PromptInjectionConfig):
            raise UserError(f"adapter {adapter_name!r} is a {type(config).__name__}; a PeftModel of idspam prompt "
                            "methods holds only idspam prompt adapters (no LoRA beside them)")
        self._check_new_adapter_config(config)
        backbone = backbone_of(model)
        layer = _attach(backbone, config.prompt_positions)
        layer.update_layer(adapter_name, config)
        self.targeted_module_names.append(ATTRIBUTE)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        set_additional_trainable_modules(model=model, peft_config=config, model_config=BaseTuner.get_model_config(self),
                                         adapter_name=adapter_name, activate_adapter=adapter_name in self.active_adapters)
        backbone.train(backbone.training)  # apply backbone_mode now
        generation = getattr(model, "generation_config", None)
        if generation is not None and getattr(generation, "use_cache", None) is not False:
            self._use_cache = generation.use_cache  # generate() recomputes the whole sequence each step
            generation.use_cache = False

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        """Freeze everything but the prompt methods (whose requires_grad `set_adapter` sets) and PEFT's auxiliary
        modules (modules_to_save, which manage their own). PEFT's version reads `config.bias` as LoRA's option,
        which LPT's `bias` (a bool) is not."""
        from peft.utils import AuxiliaryTrainingWrapper

        aux = [name + "." for name, m in model.named_modules() if isinstance(m, AuxiliaryTrainingWrapper)]
        for name, param in model.named_parameters():
            if f".{ATTRIBUTE}.idspam_prompt." in f".{name}" or any(name.startswith(a) for a in aux):
                continue
            param.requires_grad = False

    @classmethod
    def _get_learnable_bias_state_dict(cls, model, state_dict, config) -> dict:
        return {}  # no base-model biases train (LPT's `bias` is its generator's, saved with the method)

    def disable_adapter_layers(self) -> None:
        self._enable_adapter_layers(enabled=False)  # PEFT's version warns about LoRA's `bias` option

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """`...idspam_prompt.<adapter>.up.weight` -> `...idspam_prompt.up.weight` (a whole method sits under
        the adapter name, so the name is not second to last as PEFT's default mapping expects)."""
        marker = f".idspam_prompt.{adapter_name}."
        if marker in key:
            return key.replace(marker, ".idspam_prompt.", 1)
        return super()._remove_adapter_name_from_key(key, adapter_name)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """The prompt method already has the backbone's dtype (its output joins the backbone's hidden states)."""

    def _check_merge_allowed(self):
        raise UserError("an idspam prompt adapter cannot be merged into the weights (it is input-dependent); "
                        "use unload() to get the base model back")

    def unload(self) -> nn.Module:
        """The base model without the prompt layer, its forward (and generation's use_cache) restored."""
        _detach(backbone_of(self.model))
        if hasattr(self, "_use_cache"):
            self.model.generation_config.use_cache = self._use_cache
        return self.model

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        layer = getattr(backbone_of(self.model), ATTRIBUTE, None)
        if layer is not None and not layer.idspam_prompt:
            _detach(backbone_of(self.model))


def register() -> None:
    """Make PEFT know the idspam types (idempotent; `import idspam` calls it)."""
    from peft import mapping

    for method, peft_type in PEFT_TYPES.items():
        mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = CONFIGS[method]
        mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = PromptInjectionModel
        mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = PREFIX


register()

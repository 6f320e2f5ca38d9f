"""The tuner layer of idspam's PEFT methods: `PromptInjectionLayer` holds one prompt method per adapter and
the injection engine, and sits on the backbone (`model.base_model` in transformers' sense: `BertModel`,
`LlamaModel`, ...) as `idspam_injection`; the backbone's `forward` is routed through it, so the model's own
head (a classifier, a causal-LM head) reads the real tokens' final hidden states. The engine runs the
code path the runner trains with (`PromptModel.hidden_states`): the lower stack without autograd, the
prompt, the upper stack on [prompt ; hidden].
"""

from __future__ import annotations

import contextlib
import inspect
import types
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..errors import UserError
from ..injection import InjectionEngine
from ..model import PromptModel
from .config import PromptInjectionConfig

ATTRIBUTE = "idspam_injection"  # the tuner layer's name on the backbone


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
        nn.Module.__init__(self)
        self.idspam_prompt = nn.ModuleDict()
        self.idspam_layer: dict[str, int] = {}
        engine = InjectionEngine(backbone, prompt_positions)
        self._engine = (engine,)  # a tuple: kept out of the module tree (no copy of the backbone)
        self._models: dict[str, Any] = {}  # adapter -> PromptModel (engine, method, no head): the runner's code path
        self._backbone_mode: dict[str, str] = {}
        self._active_adapter = "default"
        self._disable_adapters = False
        self.merged_adapters = []
        self._generation_width: int | None = None  # the input's columns while `generate` runs

    @property
    def engine(self):
        return self._engine[0]

    def update_layer(self, adapter_name: str, config: PromptInjectionConfig) -> None:
        engine = self.engine
        if config.layer is None:
            raise UserError(f"{type(config).__name__}(layer=...) is required: the layer m the prompt is injected "
                            f"before, 0..{engine.num_layers - 1}")
        if not 0 <= config.layer < engine.num_layers:
            raise UserError(f"layer={config.layer} is out of range for this {engine.num_layers}-layer model; "
                            f"valid: 0..{engine.num_layers - 1}")
        method_cfg = config.method_config()
        if getattr(engine, "prompt_positions", config.prompt_positions) != config.prompt_positions:
            raise UserError(f"adapter {adapter_name!r} has prompt_positions={config.prompt_positions!r}, the adapters "
                            f"already on this model {engine.prompt_positions!r}; they share one engine")
        # trained parts stay float32 (the engine hands them float32 states on a bf16/fp16 backbone), as in the runner
        method = method_cfg.build(engine.hidden_size).to(device=next(engine.base.parameters()).device)
        method.attach(engine)
        if method_cfg.trains_below or method.input_embeds is not None or method.backbone_modules(engine):
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

    @contextlib.contextmanager
    def generating(self, input_width: int | None):
        """During `PeftModel.generate`: the input is the first `input_width` columns, the prompt is written from
        them alone (without a cache too: `use_cache=False` recomputes the sequence, never the prompt's source)."""
        previous, self._generation_width = self._generation_width, input_width
        try:
            yield
        finally:
            self._generation_width = previous

    def forward_backbone(self, adapter: str, input_ids, attention_mask, token_type_ids, kwargs: dict):
        from transformers.modeling_outputs import (
            BaseModelOutputWithPastAndCrossAttentions,
            BaseModelOutputWithPoolingAndCrossAttentions,
        )

        from ..generation import PROMPT_LENGTH, injected_step

        if kwargs.get("inputs_embeds") is not None:
            raise UserError("inputs_embeds is not supported with an idspam prompt adapter active: pass input_ids")
        if input_ids is None:
            raise UserError("an idspam prompt adapter needs input_ids (not inputs_embeds)")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and self.engine.causal and hasattr(cache, "get_seq_length"):
            # generation with a key/value cache (transformers passes one from the prefill on): idspam's own decode,
            # the prompt written once from the input at prefill, as `idspam.generation.generate` does
            if cache.get_seq_length() > 0 and getattr(cache, PROMPT_LENGTH, None) is None:
                raise UserError("a key/value cache filled without the idspam prompt cannot continue with it: "
                                "generate from the input")
            hidden, cache = injected_step(self._models[adapter], input_ids, attention_mask, cache)
            return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden, cache=cache)
        if cache is not None and (not hasattr(cache, "get_seq_length") or cache.get_seq_length() > 0):
            raise UserError("a key/value cache is not supported with an idspam prompt adapter on an encoder")
        # position_ids / cache_position: the engine places the real tokens itself, from the attention mask
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        width = self._generation_width
        if width is not None and input_ids.shape[1] > width:  # generate(use_cache=False): the prompt's source
            batch["input_mask"] = attention_mask.clone()
            batch["input_mask"][:, width:] = 0
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

"""The PEFT tuner of every idspam prompt method (`PEFT_TYPE_TO_TUNER_MAPPING` points each idspam type here):
it puts a `PromptInjectionLayer` on the backbone instead of replacing target modules, and implements the
PEFT hooks (trainable parameters, adapter names in saved keys, unload) that a prompt method needs."""

from __future__ import annotations

import contextlib
import types

import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import AuxiliaryTrainingWrapper
from peft.utils.other import set_additional_trainable_modules
from torch import nn

from ..errors import UserError
from ..heads import ClassificationHead, read_positions
from ..injection import gather_positions
from .config import PromptInjectionConfig
from .layer import ATTRIBUTE, PromptInjectionLayer, _attach, _detach, backbone_of

PREFIX = "idspam_"


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
        if config.head is not None and model is not backbone:
            install_head(model, backbone, config.head)  # before PEFT wraps the classifier (modules_to_save)
        self.targeted_module_names.append(ATTRIBUTE)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        set_additional_trainable_modules(model=model, peft_config=config, model_config=BaseTuner.get_model_config(self),
                                         adapter_name=adapter_name,
                                         activate_adapter=adapter_name in self.active_adapters)
        backbone.train(backbone.training)  # apply backbone_mode now

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """PeftModel enters this around `forward` and `generate` (whatever the task type): the input's width is
        kept, so that generation writes the prompt from the input alone (with the key/value cache, the
        default, by idspam's own decode; `use_cache=False` recomputes the sequence, the prompt still from the
        input). Inside one forward it changes nothing."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        layer = getattr(backbone_of(self.model), ATTRIBUTE, None)
        if layer is None or not isinstance(ids, torch.Tensor):
            yield
            return
        with layer.generating(ids.shape[1]):
            yield

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        """Freeze everything but the prompt methods (whose requires_grad `set_adapter` sets) and PEFT's auxiliary
        modules (modules_to_save, which manage their own). PEFT's version reads `config.bias` as LoRA's option,
        which LPT's `bias` (a bool) is not."""
        aux = [name + "." for name, m in model.named_modules() if isinstance(m, AuxiliaryTrainingWrapper)]
        for name, param in model.named_parameters():
            if f".{ATTRIBUTE}.idspam_prompt." in f".{name}" or any(name.startswith(a) for a in aux):
                continue
            param.requires_grad = False

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """The prompt's keys name the layer where it sat when saved (`base_model.model.idspam_injection...` on a
        bare backbone, `base_model.model.bert.idspam_injection...` on a BertForSequenceClassification): they
        are moved to where the layer sits in this model, so one folder loads onto either."""
        here = next((name for name, m in model.named_modules() if isinstance(m, PromptInjectionLayer)), None)
        if here is not None:
            marker = f"{ATTRIBUTE}."
            state_dict = {(here + "." + k.split(marker, 1)[1] if marker in k else k): v for k, v in state_dict.items()}
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)

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
        """The base model without the prompt layer, its forward restored."""
        _detach(backbone_of(self.model))
        self.model.__dict__.pop("forward", None)  # a run head's forward (install_head); the head module stays
        return self.model

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        layer = getattr(backbone_of(self.model), ATTRIBUTE, None)
        if layer is not None and not layer.idspam_prompt:
            _detach(backbone_of(self.model))


class RunHead(ClassificationHead):
    """A run's `head=cls` as a `*ForSequenceClassification` model's classifier: called with the backbone's final
    hidden states and the attention mask (the position it reads: the first token, or the last real one)."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.readout(gather_positions(hidden, read_positions({"input_ids": hidden[..., 0],
                                                                     "attention_mask": attention_mask}, self.read_at)))


def install_head(model: nn.Module, backbone: nn.Module, head: dict) -> None:
    """Put the run's head in place of the model's classification path: `model.<head["module"]>` becomes a
    RunHead (which PEFT then wraps and loads as modules_to_save), and the model's forward runs the backbone
    (through the prompt layer) and that head, nothing else: BERT's pooler, DistilBERT's pre-classifier or a
    decoder's pad-token pooling are not part of the run's head."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    name = head["module"]
    current = getattr(model, name, None)
    if isinstance(current, AuxiliaryTrainingWrapper) or isinstance(current, RunHead):
        return  # already installed (a second adapter)
    if not isinstance(current, nn.Module):
        raise UserError(f"this {type(model).__name__} has no {name!r} module for the adapter's head; the adapter "
                        f"was saved from a model whose classifier is {name!r}")
    hidden_size = backbone.config.hidden_size
    run_head = RunHead(hidden_size, head["num_labels"], head["dropout"], head["dense"], head["read_at"])
    weight = next(current.parameters(), None)
    if weight is not None:
        run_head.to(device=weight.device)
    setattr(model, name, run_head)
    model.config.num_labels = head["num_labels"]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        for key in ("output_attentions", "output_hidden_states", "return_dict", "inputs_embeds"):
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        if attention_mask is None and input_ids is not None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        logits = getattr(self, name)(hidden, attention_mask)
        loss = None
        if labels is not None:
            if head["num_labels"] == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)

    model.forward = types.MethodType(forward, model)

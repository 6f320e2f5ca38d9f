"""A prompt method, the shared injection engine and a head, composed into one nn.Module; and the one path
that loads a run's model (the runner, `idspam.load_adapter` and the parameter counts all use it)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import Backbone, count_parameters
from .config import RunConfig
from .errors import UserError
from .heads import HEADS
from .injection import InjectionEngine, LowerStates
from .tasks import TaskSpec


class PromptModel(nn.Module):
    """logits = head(engine(input, prompt = method(lower states), injected before `layer`))."""

    def __init__(self, engine: InjectionEngine, method: nn.Module, head: nn.Module, layer: int,
                 backbone_mode: str = "eval", prune_last_layer: bool = False):
        super().__init__()
        self.engine, self.method, self.head = engine, method, head
        self.layer, self.backbone_mode = layer, backbone_mode
        self.prune_last_layer = prune_last_layer
        self.lower_cache = None  # a LowerCache when cache_lower=true (training batches carry "index")
        self.eval_caches: dict = {}  # evaluation split key -> its LowerCache (eval batches carry "row")
        self.train(False)

    def train(self, mode: bool = True):
        """The frozen backbone keeps the mode the config states, whatever mode the rest is in; backbone
        modules a method trains (fine-tuning, LoRA) follow `mode`."""
        super().train(mode)
        self.engine.train(mode and self.backbone_mode == "train")
        for module in self.method.backbone_modules(self.engine):
            module.train(mode)
        return self

    def lower_states(self, batch: dict[str, torch.Tensor], split: str | None = None) -> LowerStates:
        """The frozen lower stack's output for the batch; from the cache of its split (cache_lower=true:
        `lower_cache` for training batches, `eval_caches[split]` for an evaluation split's) when it holds every
        example of the batch, else computed (and stored, when caching)."""
        cache, index = self.cache_for(batch, split)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if cache is not None and cache.has(index):
            return cache.get(index, ids, mask, self.engine, next(self.engine.parameters()).dtype)
        states = self.engine.lower(ids, mask, self.layer, batch.get("token_type_ids"), grad=self.method.grad_below,
                                    embed_fn=self.method.input_embeds)
        if cache is not None:
            cache.put(index, states)
        return states

    def cache_for(self, batch: dict, split: str | None):
        """(cache, row numbers) for the batch, or (None, None): training batches (`index`, no split) use
        `lower_cache`, evaluation batches (`row`) the cache of their split. Never while the backbone trains."""
        if self.engine.training:
            return None, None
        if split is None:
            return (self.lower_cache, batch["index"]) if "index" in batch else (None, None)
        cache = self.eval_caches.get(split)
        return (cache, batch["row"]) if cache is not None and "row" in batch else (None, None)

    def hidden_states(self, batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                      split: str | None = None) -> torch.Tensor:
        """Final hidden states of the real tokens, the method's prompt injected before `layer`; with `rows`
        (one position per example) the last layer computes only there and (B, 1, n) returns. `split`: the
        evaluation split the batch comes from (None: training)."""
        states = self.lower_states(batch, split)
        prompt = self.method(in_float32(prompt_source(states, batch)))
        return self.engine.upper(states.hidden, batch["attention_mask"], self.layer, prompt, rows=rows)

    def forward(self, batch: dict[str, torch.Tensor], split: str | None = None) -> torch.Tensor:
        if not (self.prune_last_layer and hasattr(self.head, "positions")):
            return self.head(self.hidden_states(batch, split=split), batch)
        # the head reads one position per example: the last layer computes only there (exact)
        return self.head.readout(self.hidden_states(batch, rows=self.head.positions(batch), split=split)[:, 0])

    def caches(self) -> list:
        """Every lower-stack cache of the run (training split first)."""
        return [c for c in (self.lower_cache, *self.eval_caches.values()) if c is not None]

    def aux_loss(self) -> torch.Tensor | None:
        return self.method.aux_loss()

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what trains (method, head, LoRA matrices...): never a frozen backbone tensor."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load `trained_state_dict()` output; refuse (naming `source`) anything that does not fit."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        # files written before the engine was named so (idspam 0.1: `encoder.base...`) still load
        state = {("engine." + k.removeprefix("encoder.")) if k.startswith("encoder.") else k: v
                 for k, v in state.items()}
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise UserError(f"{source} does not fit this model: it lacks {missing[:3]} and has extra {unexpected[:3]} "
                            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
        for name, tensor in state.items():
            if tensor.shape != params[name].shape:
                raise UserError(f"{source} does not fit this model: {name} has shape {tuple(tensor.shape)}, "
                                f"the model needs {tuple(params[name].shape)}")
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def parameter_counts(self) -> dict[str, int | bool]:
        """Trainable parameters; `method` counts those the method trains wherever they live (LoRA's are
        inside the backbone), `head` the head's."""
        head = count_parameters(self.head)
        trainable = count_parameters(self)
        return {
            "trainable": trainable,
            "method": trainable - head,
            "head": head,
            "head_counted_in_trainable": head > 0,
            "total": count_parameters(self, trainable_only=False),
        }


def prompt_source(states: LowerStates, batch: dict) -> LowerStates:
    """The states the prompt is computed from: with `input_mask` in the batch (head=generate: input + target
    fed together), the input tokens alone, as generation sees them; the target never shapes the prompt. On a
    causal decoder the input tokens' lower states do not depend on the target, so this equals the prompt of
    the input alone."""
    mask = batch.get("input_mask")
    if mask is None:
        return states
    view = copy.copy(states)  # keeps the class (a cached view reads its embeddings lazily)
    view.attention_mask = mask
    return view


def in_float32(states: LowerStates) -> LowerStates:
    """The trained parts stay float32 on a bfloat16/float16 backbone: they read float32 copies of its states."""
    if states.hidden.dtype == torch.float32:
        return states
    word = states._word
    return LowerStates(states.input_ids, states.attention_mask, states.embeddings.float(), states.hidden.float(),
                       _word=word.float() if word is not None else None, _engine=states._engine,
                       _dtype=torch.float32)


def build_model(run: RunConfig, spec: TaskSpec, backbone: Backbone, tokenizer) -> PromptModel:
    """The run's model on a loaded backbone: the engine, the method (attached to it) and the head."""
    engine = InjectionEngine(backbone.base, run.model.prompt_positions, run.model.activation_checkpointing)
    method = run.method.build(engine.hidden_size)
    method.attach(engine)
    head = HEADS[run.head.type].build(run, spec, backbone, tokenizer, engine)
    return PromptModel(engine, method, head, run.layer, run.model.backbone_mode, run.model.prune_last_layer)


def load_parts(run: RunConfig):
    """(backbone config, tokenizer) of a run, before any weights load: the config fitted to the tokenizer
    (a random-weight decoder with a stand-in tokenizer takes its vocabulary), the checks that need the config."""
    from . import backbone as bb
    config = bb.load_config(run.model)
    check_backbone_fits(run, config)
    tokenizer = bb.load_tokenizer(run.model, config)
    bb.fit_config_to_tokenizer(config, run.model, tokenizer)
    if HEADS[run.head.type].verbalizer:  # every label word one token
        from .tasks import mlm_verbalizer
        from .text import label_word_ids

        label_word_ids(tokenizer, mlm_verbalizer(run.spec, run.task)[1])
    return config, tokenizer


def load_model(run: RunConfig, config, tokenizer) -> tuple[PromptModel, Backbone]:
    """The run's model with its backbone's weights (pretrained, or random from `run.seed`: a random-weight
    backbone is rebuilt exactly as in training)."""
    from .backbone import load_backbone

    torch.manual_seed(run.seed)
    backbone = load_backbone(run.model, config, with_lm_head=HEADS[run.head.type].lm_head)
    return build_model(run, run.spec, backbone, tokenizer), backbone


def count_on_meta(model_cfg, method_cfg, head_cfg, spec: TaskSpec) -> dict:
    """`PromptModel.parameter_counts()` of the model a run builds, on the architecture with random weights on
    the meta device (no download, no memory)."""
    from dataclasses import replace

    from .backbone import load_backbone, load_config
    from .heads import ClassificationHead

    model_cfg = replace(model_cfg, pretrained=False, quantization="none")  # the trained parts do not change
    config = load_config(model_cfg)
    with torch.device("meta"):
        engine = InjectionEngine(load_backbone(model_cfg, config).base)
        method = method_cfg.build(engine.hidden_size)
        method.attach(engine)
        head = (ClassificationHead(engine.hidden_size, spec.num_labels, head_cfg.dropout, head_cfg.dense)
                if HEADS[head_cfg.type].trains else nn.Identity())
        return PromptModel(engine, method, head, 0).parameter_counts()


def check_layer(layer: int, num_layers: int, model_name: str) -> None:
    if not 0 <= layer <= num_layers - 1:
        raise UserError(
            f"layer={layer} is out of range for model {model_name!r} with {num_layers} layers; "
            f"valid: 0..{num_layers - 1} (0 = prepend to the embedding output)"
        )


def meta_backbone(config) -> nn.Module:
    """The bare backbone's module tree built from its config on the meta device: names and types, no weights,
    no memory (the module tree PEFT injects into: `Backbone.base`)."""
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(config)


def check_backbone_fits(run: RunConfig, config) -> None:
    """Checks that need the backbone's config (not its weights): layer range, the method's hidden size, input
    length, head family."""
    from .backbone import is_decoder, max_positions

    check_layer(run.layer, config.num_hidden_layers, run.model.name)
    if run.model.quantization != "none" and run.method.trains_frozen_weights:
        raise UserError(f"method={run.method.name} trains the backbone's own weights, which "
                        f"model.quantization={run.model.quantization} freezes in 4/8 bits; use "
                        "model.quantization=none, or a method that trains outside them (idspam, lpt, "
                        "prompt_tuning, lora as QLoRA, ...)")
    run.method.check_hidden(config.hidden_size)
    if getattr(run.method, "target_modules", None):  # LoRA's module names, on the architecture without weights
        try:
            base = meta_backbone(config)
        except Exception:  # noqa: BLE001 - an architecture AutoModel cannot build here: PEFT checks at attach
            base = None
        if base is not None:
            run.method.check_targets(base)
    limit = max_positions(config)
    if limit and run.task.max_length > limit:
        raise UserError(f"task.max_length={run.task.max_length} is beyond the {limit} positions of model "
                        f"{run.model.name!r}; valid: 8..{limit}")
    HEADS[run.head.type].check_family(is_decoder(config), run.model.name)
    if HEADS[run.head.type].generative and limit and run.task.max_length + run.task.max_target_length > limit:
        raise UserError(f"task.max_length={run.task.max_length} + task.max_target_length="
                        f"{run.task.max_target_length} is beyond the {limit} positions of model {run.model.name!r}: "
                        "the input and its target must fit together")

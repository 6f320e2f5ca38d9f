"""A prompt method, the shared injection encoder and a head, composed into one nn.Module."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import Backbone, count_parameters
from .config import RunConfig
from .data import label_word_ids
from .errors import UserError
from .heads import ClassificationHead, VerbalizerHead
from .injection import InjectionEngine, LowerStates
from .methods import build_method
from .tasks import TaskSpec, mlm_verbalizer


class PromptModel(nn.Module):
    """logits = head(encoder(input, prompt = method(lower states), injected before `layer`))."""

    def __init__(self, encoder: InjectionEngine, method: nn.Module, head: nn.Module, layer: int,
                 backbone_mode: str = "eval", prune_last_layer: bool = False):
        super().__init__()
        self.encoder, self.method, self.head = encoder, method, head
        self.layer, self.backbone_mode = layer, backbone_mode
        self.prune_last_layer = prune_last_layer
        self.lower_cache = None  # a LowerCache when cache_lower=true (training batches carry "index")
        self.eval_caches: dict = {}  # evaluation split key -> its LowerCache (eval batches carry "row")
        self.train(False)

    def train(self, mode: bool = True):
        """The frozen backbone keeps the mode the config states, whatever mode the rest is in; backbone
        modules a method trains (fine-tuning, LoRA) follow `mode`."""
        super().train(mode)
        self.encoder.train(mode and self.backbone_mode == "train")
        for module in self.method.backbone_modules(self.encoder):
            module.train(mode)
        return self

    def lower_states(self, batch: dict[str, torch.Tensor], split: str | None = None) -> LowerStates:
        """The frozen lower stack's output for the batch; from the cache of its split (cache_lower=true:
        `lower_cache` for training batches, `eval_caches[split]` for an evaluation split's) when it holds every
        example of the batch, else computed (and stored, when caching)."""
        cache, index = self.cache_for(batch, split)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if cache is not None and cache.has(index):
            return cache.get(index, ids, mask, self.encoder, next(self.encoder.parameters()).dtype)
        states = self.encoder.lower(ids, mask, self.layer, batch.get("token_type_ids"), grad=self.method.grad_below,
                                    embed_fn=self.method.input_embeds)
        if cache is not None:
            cache.put(index, states)
        return states

    def cache_for(self, batch: dict, split: str | None):
        """(cache, row numbers) for the batch, or (None, None): training batches (`index`, no split) use
        `lower_cache`, evaluation batches (`row`) the cache of their split. Never while the backbone trains."""
        if self.encoder.training:
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
        return self.encoder.upper(states.hidden, batch["attention_mask"], self.layer, prompt, rows=rows)

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
                       _word=word.float() if word is not None else None, _encoder=states._encoder,
                       _dtype=torch.float32)


def build_model(run: RunConfig, spec: TaskSpec, backbone: Backbone, tokenizer) -> PromptModel:
    encoder = InjectionEngine(backbone.base, run.model.prompt_positions)
    n = encoder.hidden_size
    method = build_method(run.method, n)
    method.attach(encoder)
    read_at = "last" if encoder.causal else "first"
    if run.head.type == "generate":
        from .data import eos_token_id
        from .heads import GenerateHead, generation_kwargs

        eos = eos_token_id(tokenizer, run.head.eos_token)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        head = GenerateHead(backbone.lm_head, generation_kwargs(run.head, eos, pad), tokenizer,
                            softcap=getattr(backbone.config, "final_logit_softcapping", None))
    elif run.head.type in ("mlm", "lm"):
        words = mlm_verbalizer(spec, run.task)[1]
        ids = label_word_ids(tokenizer, words)
        if encoder.causal:
            head = VerbalizerHead(backbone.lm_head, ids, "last",
                                  softcap=getattr(backbone.config, "final_logit_softcapping", None))
        else:
            head = VerbalizerHead(backbone.lm_head, ids, "mask", tokenizer.mask_token_id)
    else:
        head = ClassificationHead(n, spec.num_labels, run.head.dropout, run.head.dense, read_at)
    return PromptModel(encoder, method, head, run.layer, run.model.backbone_mode, run.model.prune_last_layer)

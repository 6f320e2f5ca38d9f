"""Generation with the prompt at layer m, driven by Hugging Face's own `generate`.

The stock `generate` cannot decode a model whose layers hold caches of different lengths (layers
below m see the input, layers from m on see the prompt too). Here the decoding loop, the strategies
(greedy, sampling, beam search), the logits processors and the stopping criteria are Hugging Face's;
only the model's forward is ours, through the one injection engine:

- prefill (the cache is empty): the lower stack reads the input, the method writes its prompt once
  from it, and layers m..N-1 run on [prompt ; input]; every layer's keys and values go to the cache;
- decode steps: the new token runs through all layers with the cache; layers below m attend to the
  tokens so far, layers from m on also to the prompt's cached keys and values. The generator never
  reads the generated tokens (the prompt is the input's, as in training); DEPT's embedding update
  applies to every token by its real position, generated ones included, as in causal-LM training.

`generate(model, input_ids, attention_mask, **kwargs)` returns the new tokens only; any keyword of
`transformers.GenerationMixin.generate` applies (max_new_tokens, do_sample, num_beams, eos_token_id...).
Right-padded input is moved to left padding first, so every row continues after its last real token.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .errors import UserError
from .model import PromptModel, in_float32


class InjectedCausalLM(PreTrainedModel, GenerationMixin):
    """A decoder carrying a prompt method at layer m, with its frozen LM head, as a model `generate` drives."""

    _supports_default_dynamic_cache = True
    _supports_sdpa = True  # the layers run as the backbone was loaded; this wrapper has no attention of its own
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, model: PromptModel, lm_head: nn.Module):
        if not model.engine.causal:
            raise UserError(f"generation needs a decoder; {type(model.engine.base).__name__} is an encoder")
        super().__init__(copy.deepcopy(model.engine.config))  # the backbone's own config stays untouched
        self.prompt_model, self.lm_head = model, lm_head
        self.generation_config = GenerationConfig.from_model_config(model.engine.config)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache=None,
                use_cache: bool = True, **kwargs) -> CausalLMOutputWithPast:
        hidden, cache = injected_step(self.prompt_model, input_ids, attention_mask, cache)
        engine = self.prompt_model.engine
        logits = engine.family.final_logits(engine.config, self.lm_head(hidden))
        return CausalLMOutputWithPast(logits=logits.float(), cache=cache)

    # beam search reorders the batch between steps (the prompt length kept on the cache is every row's)
    def _reorder_cache(self, cache, beam_idx):
        cache.reorder_cache(beam_idx)
        return cache


PROMPT_LENGTH = "idspam_prompt_length"  # set on a cache this module filled: the prompt's t (0: no prompt)


def injected_step(model: PromptModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache):
    """One call of a generation loop (`generate` here, or `PeftModel.generate` through the tuner): the final
    states (B, s, n) of `input_ids` and the key/value cache to pass on. A cache this function has not filled
    (None, or the one transformers made: it may hold sliding-window layers that drop the prompt) means
    prefill: a fresh full cache, the prompt written once from the input. Otherwise a decode step.

    `attention_mask` covers every real token so far and the new ones; transformers drops it when it is all
    ones, and then it is rebuilt from the cache: the real tokens it holds (layer 0's entries, less the prompt
    when m = 0) and the new ones."""
    engine, m = model.engine, model.layer
    t = getattr(cache, PROMPT_LENGTH, None) if cache is not None else None
    if t is None:  # prefill
        if cache is not None and cache.get_seq_length() > 0:
            raise UserError("a key/value cache filled without the prompt cannot continue with an idspam prompt "
                            "(the prompt is written at prefill): start generation from the input")
        cache = DynamicCache()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = engine.lower(input_ids, attention_mask, m, grad=False, embed_fn=model.method.input_embeds,
                              cache=cache)
        prompt = model.method(in_float32(states))
        setattr(cache, PROMPT_LENGTH, 0 if prompt is None else prompt.shape[1])
        return engine.upper(states.hidden, attention_mask, m, prompt, cache=cache), cache
    if attention_mask is None:
        seen = cache.get_seq_length(0) - (t if m == 0 else 0)
        attention_mask = input_ids.new_ones(input_ids.shape[0], seen + input_ids.shape[1])
    prompt_mask = attention_mask.new_ones(input_ids.shape[0], t) if t else None
    hidden = engine.decode_step(input_ids, attention_mask, m, prompt_mask, cache, embed_fn=model.method.input_embeds)
    return hidden, cache


def left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int = 0):
    """The same rows with their padding moved to the left, where decoding appends after the last real token
    (real tokens keep their positions: the engine counts them from the mask)."""
    order = torch.argsort(attention_mask.long(), dim=1, stable=True)  # pads first, real tokens in their order
    ids = input_ids.gather(1, order)
    mask = attention_mask.gather(1, order)
    return ids.masked_fill(mask == 0, pad_id), mask


@torch.no_grad()
def generate(model: PromptModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             lm_head: nn.Module | None = None, **kwargs) -> torch.Tensor:
    """The new tokens (B', max_new) that Hugging Face's `generate` picks for this model, prompt at layer m
    (with `return_dict_in_generate=True`, HF's output object, whose sequences include the input).
    `lm_head`: the decoder's frozen LM head (default: the model head's `lm_head`)."""
    lm_head = lm_head if lm_head is not None else getattr(model.head, "lm_head", None)
    if lm_head is None:
        raise UserError("generation needs the decoder's LM head (head=lm or head=generate, or pass lm_head=)")
    wrapper = InjectedCausalLM(model, lm_head).eval()
    input_ids, attention_mask = left_padded(input_ids, attention_mask, kwargs.get("pad_token_id") or 0)
    mode = model.training
    model.eval()
    try:
        out = wrapper.generate(input_ids=input_ids, attention_mask=attention_mask, cache=DynamicCache(), **kwargs)
    finally:
        model.train(mode)
    return out[:, input_ids.shape[1]:] if isinstance(out, torch.Tensor) else out

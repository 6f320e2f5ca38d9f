"""Per-family layouts: what the one injection engine (`injection.py`) needs to know about a backbone.

A layout says, for one family of Hugging Face models, where the parts are and how one span of
layers is called; the engine owns the loop. Adding a family is adding a layout here:

- `matches(base)`: is this base model (the bare `*Model`, not a `*For...` wrapper) of the family;
- `word_embedding(base)`: the token embedding table (Gemma's scales inside it);
- `layers(base)`, `final_norm(base)` (None for post-norm encoders);
- `embed(base, input_ids, positions, token_type_ids, inputs_embeds)`: the embedding output;
- `context(base, hidden, mask_2d, positions)`: what every layer of a span shares, computed once per
  span (the masks per layer type, the rotary cos/sin), and `call(layer, i, hidden, context)`.

Families: BERT/RoBERTa/XLM-R style encoders (bidirectional), GPT-2 (causal, absolute positions
added once before block 0), and Llama-style rotary decoders (Llama, Qwen2, Qwen3, Mistral, Gemma,
Gemma2: causal, sliding-window or per-layer-type masks, rotary positions in every layer).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    create_sliding_window_causal_mask,
)


def _hidden(out):
    """Layers return a tensor in transformers 5; some return a tuple whose first item is the hidden states."""
    return out[0] if isinstance(out, tuple) else out


class Layout:
    family: str = ""
    lora_targets: tuple[str, ...] = ()  # LoRA's default target modules on this family
    conv1d: bool = False
    causal: bool = False
    rotary: bool = False  # positions enter inside every layer (the prompt needs position ids there)
    model_types: tuple[str, ...] = ()

    def matches(self, base: nn.Module) -> bool:
        return getattr(base.config, "model_type", None) in self.model_types

    def word_embedding(self, base: nn.Module) -> nn.Embedding:
        raise NotImplementedError

    def embedding_module(self, base: nn.Module) -> nn.Module:
        """The module(s) that write the embedding output (fine-tuning trains them)."""
        return self.word_embedding(base)

    def layers(self, base: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def final_norm(self, base: nn.Module) -> nn.Module | None:
        return None

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        raise NotImplementedError

    def context(self, base, hidden: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> dict:
        raise NotImplementedError

    def call(self, layer: nn.Module, index: int, hidden: torch.Tensor, context: dict) -> torch.Tensor:
        raise NotImplementedError


class EncoderLayout(Layout):
    """BERT, RoBERTa, XLM-R and other encoders with `.embeddings` and `.encoder.layer` (post-norm: no final norm)."""

    family = "encoder (BERT/RoBERTa/XLM-R)"
    lora_targets = ("query", "value")
    model_types = ("bert", "roberta", "xlm-roberta", "camembert")

    def matches(self, base):
        return hasattr(base, "embeddings") and isinstance(getattr(getattr(base, "encoder", None), "layer", None),
                                                          nn.ModuleList)

    def word_embedding(self, base):
        return base.embeddings.word_embeddings

    def embedding_module(self, base):
        return base.embeddings

    def layers(self, base):
        return base.encoder.layer

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None):
        # the embedding layer derives positions itself (RoBERTa: from the padding; BERT: 0..L-1)
        return base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)

    def context(self, base, hidden, mask, positions):
        return {"mask": create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask)}

    def call(self, layer, index, hidden, context):
        return _hidden(layer(hidden, attention_mask=context["mask"]))


class GPT2Layout(Layout):
    """GPT-2: wte + wpe (positions once, before block 0), dropout, blocks, ln_f."""

    family = "GPT-2"
    lora_targets = ("c_attn",)  # the fused q/k/v projection
    conv1d = True  # GPT-2's projections are Conv1D (weights stored in x out): PEFT's fan_in_fan_out
    causal = True
    model_types = ("gpt2",)

    def word_embedding(self, base):
        return base.wte

    def embedding_module(self, base):
        return nn.ModuleList([base.wte, base.wpe])

    def layers(self, base):
        return base.h

    def final_norm(self, base):
        return base.ln_f

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None):
        words = base.wte(input_ids) if inputs_embeds is None else inputs_embeds
        return base.drop(words + base.wpe(positions))

    def context(self, base, hidden, mask, positions):
        return {"mask": create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask, cache=None)}

    def call(self, layer, index, hidden, context):
        return _hidden(layer(hidden, attention_mask=context["mask"]))


class RotaryDecoderLayout(Layout):
    """Llama-style decoders: embed_tokens, one rotary (cos, sin) per forward, layers called with keywords
    (Gemma2 orders its positional arguments differently), a mask per layer type, final norm."""

    family = "Llama-style decoder (Llama, Qwen2, Qwen3, Mistral, Gemma, Gemma2)"
    causal = True
    rotary = True
    lora_targets = ("q_proj", "v_proj")
    model_types = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2")

    def word_embedding(self, base):
        return base.embed_tokens

    def layers(self, base):
        return base.layers

    def final_norm(self, base):
        return base.norm

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None):
        return base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

    @staticmethod
    def layer_types(config) -> list[str]:
        types = getattr(config, "layer_types", None)
        if types:
            return list(types)
        sliding = getattr(config, "sliding_window", None)  # Mistral: one mask, windowed when set
        return ["sliding_attention" if sliding else "full_attention"] * config.num_hidden_layers

    def context(self, base, hidden, mask, positions):
        config = base.config
        builders = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
        types = self.layer_types(config)
        # always a 2-D mask and no position ids: create_causal_mask would read uneven positions as packed sequences
        masks = {kind: builders[kind](config=config, inputs_embeds=hidden, attention_mask=mask, cache=None)
                 for kind in set(types)}
        return {"masks": masks, "types": types, "positions": positions,
                "rotary": base.rotary_emb(hidden, positions)}

    def call(self, layer, index, hidden, context):
        return _hidden(layer(hidden, attention_mask=context["masks"][context["types"][index]],
                             position_embeddings=context["rotary"], position_ids=context["positions"]))


LAYOUTS: tuple[Layout, ...] = (EncoderLayout(), GPT2Layout(), RotaryDecoderLayout())
FAMILIES = tuple(layout.family for layout in LAYOUTS)


def layout_for(base: nn.Module) -> Layout | None:
    return next((layout for layout in LAYOUTS if layout.matches(base)), None)


def layout_for_config(config) -> Layout | None:
    """The family from a config alone (checked before any weights load)."""
    model_type = getattr(config, "model_type", None)
    return next((layout for layout in LAYOUTS if model_type in layout.model_types), None)


def supported_model_types() -> str:
    return "; ".join(f"{layout.family}: {', '.join(layout.model_types)}" for layout in LAYOUTS)

"""Backbone families: what the one injection engine (`injection.py`) needs to know about a backbone.

A family says, for a set of Hugging Face model types, where the parts are and how one span of
layers is called; the engine owns the loop. Adding a family is adding a `Family` here:

- `matches(base)`: is this base model (the bare `*Model`, not a `*For...` wrapper) of the family;
- `word_embedding(base)`: the token embedding table (Gemma's scales inside it);
- `layers(base)`, `final_norm(base)` (None for post-norm encoders);
- `embed(base, input_ids, positions, token_type_ids, inputs_embeds)`: the embedding output;
- `context(base, hidden, mask_2d, positions)`: what every layer of a span shares, computed once per
  span (the masks per layer type, the rotary cos/sin), and `call(layer, i, hidden, context)`;
- `keys_values(layer, hidden, context)`: the keys and values one layer's attention computes for every
  token, so that the last layer can run only at the positions a head reads (`call_at`): the layer's
  own forward runs on those rows, with the keys and values of every token handed to its attention
  through the cache argument (`FixedKeysValues`), the rows of the masks and the rotary cos/sin.

Families: BERT/RoBERTa/XLM-R style encoders (bidirectional), GPT-2 (causal, absolute positions
added once before block 0), and Llama-style rotary decoders (Llama, Qwen2, Qwen3, Mistral, Gemma,
Gemma2: causal, sliding-window or per-layer-type masks, rotary positions in every layer).
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
)


def _hidden(out):
    """Layers return a tensor in transformers 5; some return a tuple whose first item is the hidden states."""
    return out[0] if isinstance(out, tuple) else out


class FixedKeysValues:
    """Stands in for a key/value cache during one layer call: `update` answers with the keys and values of
    every token, computed beforehand (they already include those of the rows the layer is called on)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        return self.keys, self.values


def gather_rows(tensor: torch.Tensor | None, rows: torch.Tensor, dim: int = 1) -> torch.Tensor | None:
    """tensor[b, ..., rows[b], ...] along `dim`, keeping that dim (size 1)."""
    if tensor is None:
        return None
    if tensor.shape[0] == 1 and rows.shape[0] > 1:
        tensor = tensor.expand(rows.shape[0], *tensor.shape[1:])
    index = rows.view(-1, *([1] * (tensor.dim() - 1))).expand(-1, *[1 if d == dim else s
                                                                      for d, s in enumerate(tensor.shape)][1:])
    return tensor.gather(dim, index)


def mask_rows(mask, rows: torch.Tensor, causal: bool = False):
    """The query rows of a 4-D (B, 1, Q, K) attention mask. None (a bidirectional mask without padding: every
    key is seen) stays None; a causal span is given materialized masks (`materialize` in `Family.context`), so
    a row other than the last never sees later tokens."""
    if mask is None:
        if causal:
            raise NotImplementedError("last-layer pruning on a causal span needs materialized masks")
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise NotImplementedError(f"last-layer pruning needs a 4-D tensor mask, not {type(mask).__name__}")
    return gather_rows(mask, rows, dim=2)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """tanh softcapping (Gemma2's final logits); no cap: unchanged."""
    return logits if not cap else torch.tanh(logits / cap) * cap


def restrict_to_window(causal, mask: torch.Tensor, window: int):
    """A 4-D causal mask (B, 1, Q, K) (bool for sdpa, additive float for eager) narrowed to a sliding window over
    the row's own tokens: query and key at most `window - 1` attended tokens apart, counted on the 2-D `mask`
    (B, K) that covers every key column (the queries are its last Q columns). Without padding inside the row
    this is transformers' window over columns. Other masks (flash, flex attention) are left as they are."""
    if not isinstance(causal, torch.Tensor) or causal.dim() != 4:
        return causal
    index = mask.int().cumsum(-1, dtype=torch.int32)  # int32 and one comparison: cheap at (B, Q, K)
    inside = (index[:, None, :] > (index[:, -causal.shape[2]:] - window)[:, :, None])[:, None]
    if causal.dtype == torch.bool:
        return causal & inside
    return causal.masked_fill(~inside, torch.finfo(causal.dtype).min)


class Family:
    """What the injection engine needs to know about one family of backbones (see the module's doc); one
    instance per family in `FAMILIES`, found by `model_type`."""

    name: str = ""  # in messages
    causal: bool = False
    rotary: bool = False  # positions enter inside every layer (the prompt needs position ids there)
    model_types: tuple[str, ...] = ()

    def matches(self, base: nn.Module) -> bool:
        """A transformers model class of one of the family's model types (those tested exact), or a subclass
        of one; never by its attributes alone (MPNet, DeBERTa-v2, ESM have `.embeddings` and `.encoder.layer`
        too, with layers this family does not run: relative position biases, other keywords)."""
        model_type = getattr(getattr(base, "config", None), "model_type", None)
        if model_type not in self.model_types:
            return False
        package = f"transformers.models.{model_type.replace('-', '_')}."
        return any(cls.__module__.startswith(package) for cls in type(base).__mro__)

    def final_softcap(self, config) -> float | None:
        """The cap the family's causal-LM class puts on its final logits (None: none)."""
        return None

    def final_logits(self, config, logits: torch.Tensor) -> torch.Tensor:
        """What the family's `*ForCausalLM` does to `lm_head(hidden)` (Gemma2: tanh softcapping); every path that
        turns final states into LM logits (heads, generation) goes through here."""
        return softcap(logits, self.final_softcap(config))

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

    def context(self, base, hidden: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache=None,
                span: tuple[int, int] = (0, 0), materialize: bool = False) -> dict:
        """What layers[span] share. With a key/value `cache` (decoding), the masks are sized by the cache of
        the span's layers (layers >= m hold t more entries than those below m). `materialize`: 4-D masks even
        where sdpa could run `is_causal` without one (last-layer pruning reads rows of them)."""
        raise NotImplementedError

    def call(self, layer: nn.Module, index: int, hidden: torch.Tensor, context: dict, cache=None) -> torch.Tensor:
        raise NotImplementedError

    def keys_values(self, layer: nn.Module, hidden: torch.Tensor, context: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rows_context(self, context: dict, rows: torch.Tensor) -> dict:
        return {**context, "mask": mask_rows(context.get("mask"), rows, self.causal)}

    def call_at(self, layer: nn.Module, index: int, hidden: torch.Tensor, context: dict,
                rows: torch.Tensor) -> torch.Tensor:
        """The layer's output at one row per example (B, 1, n): queries, attention output and feed-forward
        only there; keys and values from every token."""
        keys, values = self.keys_values(layer, hidden, context)
        return self.call(layer, index, gather_rows(hidden, rows), self.rows_context(context, rows),
                         cache=FixedKeysValues(keys, values))


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, h * d) -> (B, h, L, d)"""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


class EncoderFamily(Family):
    """BERT, RoBERTa, XLM-R and other encoders with `.embeddings` and `.encoder.layer` (post-norm: no final norm)."""

    name = "encoder (BERT/RoBERTa/XLM-R)"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert")

    def matches(self, base):
        return super().matches(base) and hasattr(base, "embeddings") and isinstance(
            getattr(getattr(base, "encoder", None), "layer", None), nn.ModuleList)

    def word_embedding(self, base):
        return base.embeddings.word_embeddings

    def embedding_module(self, base):
        return base.embeddings

    def layers(self, base):
        return base.encoder.layer

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None):
        # the embedding layer derives positions itself (RoBERTa: from the padding; BERT: 0..L-1)
        return base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)

    def context(self, base, hidden, mask, positions, cache=None, span=(0, 0), materialize=False):
        return {"mask": create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask)}

    def call(self, layer, index, hidden, context, cache=None):
        return _hidden(layer(hidden, attention_mask=context["mask"], cache=cache))

    def keys_values(self, layer, hidden, context):
        attention = layer.attention.self
        return (_heads(attention.key(hidden), attention.attention_head_size),
                _heads(attention.value(hidden), attention.attention_head_size))


class GPT2Family(Family):
    """GPT-2: wte + wpe (positions once, before block 0), dropout, blocks, ln_f."""

    name = "GPT-2"
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

    def context(self, base, hidden, mask, positions, cache=None, span=(0, 0), materialize=False):
        return {"mask": create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask, cache=cache,
                                           layer_idx=span[0] if cache is not None else None,
                                           allow_is_causal_skip=not materialize)}

    def call(self, layer, index, hidden, context, cache=None):
        return _hidden(layer(hidden, attention_mask=context["mask"], cache=cache))

    def keys_values(self, layer, hidden, context):
        attention = layer.attn
        _, keys, values = attention.c_attn(layer.ln_1(hidden)).split(attention.split_size, dim=2)
        return _heads(keys, attention.head_dim), _heads(values, attention.head_dim)


class RotaryDecoderFamily(Family):
    """Llama-style decoders: embed_tokens, one rotary (cos, sin) per forward, layers called with keywords
    (Gemma2 orders its positional arguments differently), a mask per layer type, final norm."""

    name = "Llama-style decoder (Llama, Qwen2, Qwen3, Mistral, Gemma, Gemma2)"
    causal = True
    rotary = True
    model_types = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2")

    def word_embedding(self, base):
        return base.embed_tokens

    def layers(self, base):
        return base.layers

    def final_norm(self, base):
        return base.norm

    def embed(self, base, input_ids, positions, token_type_ids=None, inputs_embeds=None):
        return base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

    # the model classes that read `config.layer_types` (one mask per type); the others build one mask
    # whatever the config says: Mistral a sliding one when `sliding_window` is set, Llama and Gemma a causal one
    per_layer_types = ("qwen2", "qwen3", "gemma2")
    softcapped = ("gemma2",)  # Gemma2ForCausalLM caps its final logits

    def final_softcap(self, config):
        return getattr(config, "final_logit_softcapping", None) if config.model_type in self.softcapped else None

    def layer_types(self, config) -> list[str]:
        """The mask type of every layer, as the family's model class decides it (not the config's fields)."""
        if config.model_type in self.per_layer_types:
            return list(config.layer_types)
        if config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
            return ["sliding_attention"] * config.num_hidden_layers
        return ["full_attention"] * config.num_hidden_layers

    def context(self, base, hidden, mask, positions, cache=None, span=(0, 0), materialize=False):
        config = base.config
        types = self.layer_types(config)
        # the first layer of each type in the span sizes that type's mask against the cache
        first = {kind: next((i for i in range(*span) if types[i] == kind), None) for kind in set(types)}
        masks = {}
        for kind in set(types):
            if cache is not None and first[kind] is None:
                continue
            # always a 2-D mask and no position ids: create_causal_mask would read uneven positions as packed
            # sequences. A sliding window counts the tokens of the row (prompt and real ones), not its columns:
            # padding between the prompt and the input never pushes the prompt out of a window.
            sliding = kind == "sliding_attention"
            masks[kind] = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=mask, cache=cache,
                                             allow_is_causal_skip=not (materialize or sliding),
                                             layer_idx=first[kind] if cache is not None else None)
            if sliding:
                masks[kind] = restrict_to_window(masks[kind], mask, config.sliding_window)
        return {"masks": masks, "types": types, "positions": positions,
                "rotary": base.rotary_emb(hidden, positions)}

    def call(self, layer, index, hidden, context, cache=None):
        return _hidden(layer(hidden, attention_mask=context["masks"][context["types"][index]],
                             position_embeddings=context["rotary"], position_ids=context["positions"], cache=cache))

    def keys_values(self, layer, hidden, context):
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        keys = attention.k_proj(x).view(*x.shape[:2], -1, attention.head_dim)
        if getattr(attention, "k_norm", None) is not None:  # Qwen3
            keys = attention.k_norm(keys)
        keys = keys.transpose(1, 2)
        rotate = sys.modules[type(attention).__module__].apply_rotary_pos_emb  # the family's own
        cos, sin = context["rotary"]
        keys = rotate(keys, keys, cos, sin)[0]
        return keys, _heads(attention.v_proj(x), attention.head_dim)

    def rows_context(self, context, rows):
        cos, sin = context["rotary"]
        return {**context, "masks": {kind: mask_rows(mask, rows) for kind, mask in context["masks"].items()},
                "rotary": (gather_rows(cos, rows), gather_rows(sin, rows)),
                "positions": gather_rows(context["positions"], rows)}


FAMILIES: tuple[Family, ...] = (EncoderFamily(), GPT2Family(), RotaryDecoderFamily())


def family_of(base: nn.Module) -> Family | None:
    """The family of a bare base model (`BertModel`, `LlamaModel`, ...), or None."""
    return next((family for family in FAMILIES if family.matches(base)), None)


def family_for_config(config) -> Family | None:
    """The family from a config alone (checked before any weights load)."""
    model_type = getattr(config, "model_type", None)
    return next((family for family in FAMILIES if model_type in family.model_types), None)


def supported_model_types() -> str:
    return "; ".join(f"{family.name}: {', '.join(family.model_types)}" for family in FAMILIES)

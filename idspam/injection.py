"""The one prompt-injection mechanism every method shares.

A frozen encoder is run in two parts around layer m:

    lower:  embeddings -> layers[0:m]       under torch.no_grad(): no graph, no kept activations
    prompt: t vectors from a prompt method (it may read the input ids, the word embeddings,
            the embedding output or the hidden states entering layer m)
    upper:  [prompt ; hidden] -> layers[m:N] with the attention mask grown by t ones

m = 0 prepends the prompt to the embedding output. Position embeddings are added inside the
embedding layer, before any prompt exists, so the real tokens keep their positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from .errors import UserError


@dataclass
class LowerStates:
    """What the frozen lower stack computed for a batch; prompt methods read from it."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    embeddings: torch.Tensor  # embedding output (word + position + type, LayerNorm)
    hidden: torch.Tensor  # hidden states entering layer m (== embeddings when m = 0)
    _word: torch.Tensor | None = field(default=None, repr=False)
    _encoder: PromptInjectedEncoder | None = field(default=None, repr=False)

    @property
    def word_embeddings(self) -> torch.Tensor:
        """Word (token) embeddings alone, computed on first use, without a graph."""
        if self._word is None:
            with torch.no_grad():
                self._word = self._encoder.word_embeddings(self.input_ids)
        return self._word


class PromptInjectedEncoder(nn.Module):
    """Runs a BERT/RoBERTa-style encoder with a prompt inserted before layer m."""

    def __init__(self, base: nn.Module):
        super().__init__()
        embeddings = getattr(base, "embeddings", None)
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if embeddings is None or not isinstance(layers, nn.ModuleList):
            raise UserError(
                f"{type(base).__name__} is not an encoder this project can inject into "
                "(needs .embeddings and .encoder.layer, as BERT, RoBERTa, XLM-R and similar have)"
            )
        self.base = base
        self.config = base.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.base.encoder.layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embeddings.word_embeddings(input_ids)

    @torch.no_grad()
    def embedding_output(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the embedding layer writes for these ids (no dropout): the space a prompt at m = 0 lives in."""
        embeddings, mode = self.base.embeddings, self.base.embeddings.training
        embeddings.eval()
        try:
            return embeddings(input_ids=input_ids)
        finally:
            embeddings.train(mode)

    def run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, end: int) -> torch.Tensor:
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers[start:end]:
            hidden = layer(hidden, mask)
        return hidden

    def lower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        token_type_ids: torch.Tensor | None = None,
        grad: bool = False,
        embed_fn=None,
    ) -> LowerStates:
        """Embeddings and layers[0:layer]. Without `grad` (the default) no autograd graph is built.
        `embed_fn(word_embeddings, input_ids)` may rewrite the word embeddings first (DEPT)."""
        if not 0 <= layer < self.num_layers:
            raise UserError(f"layer={layer} is out of range; valid: 0..{self.num_layers - 1}")
        word = None
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            if embed_fn is not None:
                with torch.no_grad():
                    word = self.word_embeddings(input_ids)
                embeddings = self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                                  inputs_embeds=embed_fn(word, input_ids))
            else:
                embeddings = self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            hidden = self.run_layers(embeddings, attention_mask, 0, layer)
        return LowerStates(input_ids, attention_mask, embeddings, hidden, _word=word, _encoder=self)

    def upper(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        prompt: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """layers[layer:N] on [prompt ; hidden]; returns the final hidden states of the real tokens only."""
        t = 0
        if prompt is not None:
            t = prompt.shape[1]
            if prompt_mask is None:
                prompt_mask = attention_mask.new_ones(attention_mask.shape[0], t)
            hidden = torch.cat([prompt.to(hidden.dtype), hidden], dim=1)
            attention_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)
        hidden = self.run_layers(hidden, attention_mask, layer, self.num_layers)
        return hidden[:, t:]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        prompt_fn=None,
        token_type_ids: torch.Tensor | None = None,
        grad_below: bool = False,
        embed_fn=None,
    ) -> torch.Tensor:
        """Final hidden states of the real tokens, with `prompt_fn(LowerStates)` injected before `layer`
        (it may return None: no prompt). `grad_below` builds the graph below `layer` too (methods that
        train something there: fine-tuning, LoRA, DEPT)."""
        states = self.lower(input_ids, attention_mask, layer, token_type_ids, grad=grad_below, embed_fn=embed_fn)
        prompt = prompt_fn(states) if prompt_fn is not None else None
        return self.upper(states.hidden, attention_mask, layer, prompt)

"""The one prompt-injection mechanism every method and every backbone family shares.

A frozen language model is run in two parts around layer m:

    lower:  embeddings -> layers[0:m]       under torch.no_grad(): no graph, no kept activations
    prompt: t vectors from a prompt method (it may read the input ids, the word embeddings,
            the embedding output or the hidden states entering layer m)
    upper:  [prompt ; hidden] -> layers[m:N] -> final norm, with the attention mask grown by t

The backbone's family (`families.py`) says how to embed, which mask a span of layers gets
(bidirectional, causal, sliding window, one per layer type) and how positions reach the layers;
this module owns the loop, so no method and no family has a copy of it.

Positions. Real tokens keep positions 0..L-1 whatever t and the padding side are
(`cumsum(attention_mask) - 1`, what `generate` gives a left-padded batch). Encoders and GPT-2 add
positions once, in the embedding layer, so a prompt entering at m carries none. Rotary decoders
apply positions inside every layer, so the prompt gets position ids too: `prompt_positions`
`before` (the default: -t..-1, just before the first real token, as a real prefix would sit) or
`zero` (every prompt vector at 0). Either way a prompt whose mask is all zeros leaves every real
token's output unchanged.

On causal models a prompt prepended at m is seen by every real token; it sees only itself and the
earlier prompt vectors (the generator already carries the input's content).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import UserError
from .families import Family, family_of, supported_model_types

PROMPT_POSITIONS = ("before", "zero")


@dataclass
class LowerStates:
    """What the frozen lower stack computed for a batch; prompt methods read from it."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    embeddings: torch.Tensor  # embedding output (encoders: word + position + type, LayerNorm)
    hidden: torch.Tensor  # hidden states entering layer m (== embeddings when m = 0)
    _word: torch.Tensor | None = field(default=None, repr=False)
    _engine: InjectionEngine | None = field(default=None, repr=False)
    _dtype: torch.dtype | None = field(default=None, repr=False)  # the dtype readers get (None: the backbone's)

    @property
    def word_embeddings(self) -> torch.Tensor:
        """Word (token) embeddings alone, computed on first use, without a graph."""
        if self._word is None:
            with torch.no_grad():
                self._word = self._engine.word_embeddings(self.input_ids)
                if self._dtype is not None:
                    self._word = self._word.to(self._dtype)
        return self._word

    def summary_token(self) -> torch.Tensor:
        """(B, n): the state entering m at the token that has seen the whole input: the first token on
        encoders, the last real token on causal decoders (LPT's generator input)."""
        if self._engine is None or not self._engine.causal:
            return self.hidden[:, 0]
        return gather_positions(self.hidden, last_real_position(self.attention_mask))


def last_real_position(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last 1 in each row: right or left padding alike."""
    L = attention_mask.shape[1]
    return L - 1 - attention_mask.flip(1).int().argmax(dim=1)


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]


def real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """0..L-1 over each row's real tokens (left-padded rows start later); pads get 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def check_injectable(base: nn.Module) -> None:
    """One line when no family of the engine runs this base model exactly (every entry point calls it: the
    runner checks the config's model type before any weights load, `idspam.wrap`, `get_peft_model` and the
    engine check the model)."""
    if family_of(base) is None:
        model_type = getattr(getattr(base, "config", None), "model_type", None)
        raise UserError(
            f"{type(base).__name__} (model_type {model_type!r}) is not a model this project can inject into; "
            f"supported families: {supported_model_types()}")


def checkpointed(on: bool, fn, *args, **kwargs):
    """fn(*args) through PyTorch's non-reentrant activation checkpoint when `on` (same outputs and gradients)."""
    if not on:
        return fn(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fn, *args, use_reentrant=False, **kwargs)


def unpack_cpu_4bit_weights(base: nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers of `base` on their dequantize-and-GEMM path on the CPU.

    On a CPU with AVX512-BF16, a `Linear4bit` that runs in eval mode without autograd (the frozen stack below m,
    evaluation) repacks its weight for a fused kernel on first call. Without that kernel (it comes from the
    `kernels` package, fetched from the Hugging Face hub) bitsandbytes falls back to a row loop in bfloat16: on
    this project's 2-core CPU, 2048 x 2048 nf4, 5.4 ms per 64 rows against 3.0 ms dequantized, 45 against 10 ms per
    512 (faster only below about 32 rows: 0.23 against 1.6 ms for one, a decode step), and in bfloat16 whatever
    `model.dtype` says. So, where the fused kernel did not load, the engine turns the repacking off and unpacks
    weights already repacked: the layers then run as in training, bit for bit, with or without autograd."""
    import sys

    if "bitsandbytes" not in sys.modules:  # a quantized model has imported it
        return
    ops = sys.modules.get("bitsandbytes.backends.cpu.ops")
    if getattr(ops, "gemm_4bit_forward_kernel", None) is not None:
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    from bitsandbytes.nn import Linear4bit

    for module in base.modules():
        if not isinstance(module, Linear4bit) or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, weight.quant_state)


class InjectionEngine(nn.Module):
    """Runs a frozen Hugging Face base model (`*Model`, not `*For...`) with a prompt inserted before layer m."""

    def __init__(self, base: nn.Module, prompt_positions: str = "before", activation_checkpointing: bool = False):
        super().__init__()
        check_injectable(base)
        family = family_of(base)
        if prompt_positions not in PROMPT_POSITIONS:
            raise UserError(f"model.prompt_positions={prompt_positions!r}; valid: {', '.join(PROMPT_POSITIONS)}")
        unpack_cpu_4bit_weights(base)
        self.base = base
        self.config = base.config
        self.family: Family = family
        self.prompt_positions = prompt_positions
        # layers run with a graph (m..N-1) keep only their inputs and recompute the rest in backward
        self.activation_checkpointing = activation_checkpointing

    @property
    def causal(self) -> bool:
        return self.family.causal

    @property
    def layers(self) -> nn.ModuleList:
        return self.family.layers(self.base)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def embedding_module(self) -> nn.Module:
        return self.family.embedding_module(self.base)

    @property
    def word_embedding_table(self) -> torch.Tensor:
        return self.family.word_embedding(self.base).weight

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.family.word_embedding(self.base)(input_ids)

    @torch.no_grad()
    def embedding_output(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the embedding layer writes for these ids (no dropout): the space a prompt at m = 0 lives in."""
        mode = self.base.training
        self.base.eval()
        try:
            positions = real_positions(torch.ones_like(input_ids))
            return self.family.embed(self.base, input_ids, positions)
        finally:
            self.base.train(mode)

    def run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                   start: int, end: int, rows: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """layers[start:end]; the masks and rotary positions are computed once for the span. With `rows`
        (B,), the last layer computes only there (keys and values from every token) and (B, 1, n) returns.
        With a key/value `cache` (decoding, `generation.py`) every layer appends its keys and values to it."""
        if start >= end:
            return hidden
        context = self.family.context(self.base, hidden, attention_mask, positions, cache, (start, end))
        last = end - 1 if rows is not None else end
        ckpt = self.activation_checkpointing and cache is None and torch.is_grad_enabled()
        for index in range(start, last):
            hidden = checkpointed(ckpt, self.family.call, self.layers[index], index, hidden, context, cache=cache)
        if rows is not None:
            if self.family.causal:  # pruning reads query rows of the masks, never the None of sdpa's is_causal:
                # the pruned layer alone gets built masks (the layers before it keep the is_causal fast path)
                context = self.family.context(self.base, hidden, attention_mask, positions, cache, (last, end),
                                              materialize=True)
            hidden = checkpointed(ckpt, self.family.call_at, self.layers[last], last, hidden, context, rows)
        return hidden

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise UserError(f"layer={layer} is out of range; valid: 0..{self.num_layers - 1}")

    def lower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        token_type_ids: torch.Tensor | None = None,
        grad: bool = False,
        embed_fn=None,
        cache=None,
    ) -> LowerStates:
        """Embeddings and layers[0:layer]. Without `grad` (the default) no autograd graph is built.
        `embed_fn(word_embeddings, input_ids, positions)` may rewrite the word embeddings first (DEPT). A key/value
        `cache` (decoding) receives layers[0:layer]'s keys and values."""
        self.check_layer(layer)
        word = None
        positions = real_positions(attention_mask)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            inputs_embeds = None
            if embed_fn is not None:
                with torch.no_grad():
                    word = self.word_embeddings(input_ids)
                inputs_embeds = embed_fn(word, input_ids, positions)
            embeddings = self.family.embed(self.base, input_ids, positions, token_type_ids, inputs_embeds)
            hidden = self.run_layers(embeddings, attention_mask, positions, 0, layer, cache=cache)
        return LowerStates(input_ids, attention_mask, embeddings, hidden, _word=word, _engine=self)

    def prompt_position_ids(self, t: int, like: torch.Tensor) -> torch.Tensor:
        if self.prompt_positions == "zero":
            return like.new_zeros(like.shape[0], t)
        return torch.arange(-t, 0, device=like.device, dtype=like.dtype).expand(like.shape[0], t)

    def upper(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        prompt: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """layers[layer:N] on [prompt ; hidden], then the final norm; the real tokens' states only.
        `rows` (B,): the one position per example a head reads (in real-token coordinates); the last layer
        then computes only there and (B, 1, n) returns, equal to the full output at those positions."""
        positions = real_positions(attention_mask)
        t = 0
        if prompt is not None:
            t = prompt.shape[1]
            if prompt_mask is None:
                prompt_mask = attention_mask.new_ones(attention_mask.shape[0], t)
            hidden = torch.cat([prompt.to(hidden.dtype), hidden], dim=1)
            attention_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)
            positions = torch.cat([self.prompt_position_ids(t, positions), positions], dim=1)
        if rows is not None:
            hidden = self.run_layers(hidden, attention_mask, positions, layer, self.num_layers, rows + t, cache)
        else:
            hidden = self.run_layers(hidden, attention_mask, positions, layer, self.num_layers, cache=cache)[:, t:]
        norm = self.family.final_norm(self.base)
        return norm(hidden) if norm is not None else hidden

    def decode_step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                    prompt_mask: torch.Tensor | None, cache, embed_fn=None) -> torch.Tensor:
        """New tokens (B, s) through every layer with the key/value `cache` a prefill (`lower` + `upper` with
        the cache) filled: layers below m see the real tokens so far, layers from m on the prompt too
        (`prompt_mask`, (B, t), None when there is no prompt). `attention_mask` covers every real token so far,
        the new ones included; they take the next real positions. Returns their final states (B, s, n)."""
        positions = real_positions(attention_mask)[:, -input_ids.shape[1]:]
        inputs_embeds = None if embed_fn is None else embed_fn(self.word_embeddings(input_ids), input_ids, positions)
        hidden = self.family.embed(self.base, input_ids, positions, inputs_embeds=inputs_embeds)
        hidden = self.run_layers(hidden, attention_mask, positions, 0, layer, cache=cache)
        upper_mask = attention_mask if prompt_mask is None else torch.cat(
            [prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)
        hidden = self.run_layers(hidden, upper_mask, positions, layer, self.num_layers, cache=cache)
        norm = self.family.final_norm(self.base)
        return norm(hidden) if norm is not None else hidden

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


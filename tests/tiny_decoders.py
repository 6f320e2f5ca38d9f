"""Tiny random decoders of every supported family for the exactness tests: 3 layers, hidden 32, vocab 100,
windows (4) shorter than the rows, Gemma2's final softcap small (3.0), and the attention projections scaled
up so that attention is peaked: masks, windows and softcaps change the outputs (a test that passes with the
mask ignored proves nothing; `test_batch_invariance.test_the_weights_make_masks_matter` checks it)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 100
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=256,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "llama": dict(model_type="llama", num_key_value_heads=2, **COMMON),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2, use_sliding_window=True, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"], **COMMON),
    "qwen3": dict(model_type="qwen3", num_key_value_heads=2, head_dim=8, use_sliding_window=True, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"], **COMMON),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=4, **COMMON),
    "gemma": dict(model_type="gemma", num_key_value_heads=1, head_dim=8, **COMMON),
    "gemma2": dict(model_type="gemma2", num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                   final_logit_softcapping=3.0, attn_logit_softcapping=5.0, **COMMON),
}
ATTN = ("eager", "sdpa")
# Gemma2 softcaps its attention scores: transformers runs it under eager only
FAMILY_ATTN = [(family, attn) for family in FAMILIES for attn in ATTN if not (family == "gemma2" and attn == "sdpa")]
SCALE = 4.0  # query/key projections: peaked attention


def causal_lm(family: str, attn: str = "eager", seed: int = 0):
    arch = dict(FAMILIES[family])
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if any(k in name for k in ("q_proj", "k_proj", "c_attn")) and p.dim() == 2:
                p.mul_(SCALE)
            elif name.endswith(("embed_tokens.weight", "wte.weight")):
                p.mul_(2.0)
        if getattr(config, "final_logit_softcapping", None):  # logits well beyond the cap (Gemma's norm: 1 + w)
            lm.model.norm.weight.add_(9.0)
    return lm


def rows(lengths, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]


def pad(token_rows: list[torch.Tensor], side: str, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with pad id 0 on `side`, `width` columns (default: the longest row)."""
    width = width or max(len(r) for r in token_rows)
    ids = torch.zeros(len(token_rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(token_rows):
        where = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, where], mask[i, where] = r, 1
    return ids, mask

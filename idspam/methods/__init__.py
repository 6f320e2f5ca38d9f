"""Prompt methods and baselines. Each has a config dataclass (the `method=` group; its schema) and
a module (a `PromptMethod`) built from it, as HF PEFT separates a method's config from its model.

Every prompt method writes its prompt from the frozen lower stack's `LowerStates`; the shared
`PromptInjectedEncoder` inserts it before layer m. See `base.py` for the hooks.
"""

from __future__ import annotations

from typing import Any

from ..errors import check_choice
from .base import MethodConfig, PromptMethod
from .dept import DecomposedPrompt, DEPTConfig
from .finetune import Finetune, FinetuneConfig
from .idspam import IDSPAMConfig, IDSPAMGenerator
from .lora import LoRA, LoRAConfig
from .lpt import LatePrompt, LPTConfig
from .prompt_tuning import PromptTuning, PromptTuningConfig
from .ptuning import PTuning, PTuningConfig
from .smop import SMoPConfig, SparsePromptMixture

# method name -> (config dataclass, module class)
METHODS: dict[str, tuple[type[MethodConfig], type[PromptMethod]]] = {
    "idspam": (IDSPAMConfig, IDSPAMGenerator),
    "idspam_meanpool": (IDSPAMConfig, IDSPAMGenerator),
    "prompt_tuning": (PromptTuningConfig, PromptTuning),
    "ptuning": (PTuningConfig, PTuning),
    "lpt": (LPTConfig, LatePrompt),
    "smop": (SMoPConfig, SparsePromptMixture),
    "dept": (DEPTConfig, DecomposedPrompt),
    "lora": (LoRAConfig, LoRA),
    "finetune": (FinetuneConfig, Finetune),
}


def method_config(node: Any) -> MethodConfig:
    """Typed, checked config of the `method` group."""
    from ..config import typed

    name = (node or {}).get("name")
    check_choice("method", name, METHODS)
    cfg = typed(node, METHODS[name][0], "method")
    cfg.check()
    return cfg


def build_method(cfg: MethodConfig, hidden_size: int) -> PromptMethod:
    return METHODS[cfg.name][1](cfg, hidden_size)

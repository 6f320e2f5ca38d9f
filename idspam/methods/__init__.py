"""Prompt methods: each has a config dataclass (`method=` group) and a module that writes the prompt.

A method's module takes the frozen lower stack's `LowerStates` and returns a (B, t, n) prompt,
which the shared `PromptInjectedEncoder` inserts before layer m.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError, check_choice
from .idspam import IDSPAMConfig, IDSPAMGenerator

# method name -> (config dataclass, module class)
METHODS: dict[str, tuple[type, type[nn.Module]]] = {
    "idspam": (IDSPAMConfig, IDSPAMGenerator),
    "idspam_meanpool": (IDSPAMConfig, IDSPAMGenerator),
}


def method_config(node: Any):
    """Typed, checked config of the `method` group."""
    from ..config import typed

    name = (node or {}).get("name")
    check_choice("method", name, METHODS)
    cfg = typed(node, METHODS[name][0], "method")
    cfg.check()
    if name == "idspam_meanpool" and cfg.attention:
        raise UserError("method=idspam_meanpool is the ablation without attention; it needs method.attention=false")
    return cfg


def build_method(cfg, hidden_size: int) -> nn.Module:
    return METHODS[cfg.name][1](cfg, hidden_size)

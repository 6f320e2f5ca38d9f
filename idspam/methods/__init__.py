"""Prompt methods and baselines. Each is one module here: a config dataclass (the `method=` group's schema,
its options checked on construction, its traits) and a `PromptMethod` module it builds, as HF PEFT
separates a method's config from its model. `METHODS` (name -> config class) finds every module of this
package on first use.

Every prompt method writes its prompt from the frozen lower stack's `LowerStates`; the shared
`InjectionEngine` inserts it before layer m. See `base.py` for the hooks.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from ..errors import check_choice
from .base import MethodConfig, PromptMethod


@functools.cache
def registry() -> dict[str, type[MethodConfig]]:
    """name -> config class of every method (each module of this package is imported once, on first use)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(MethodConfig.registered)


def __getattr__(name: str):
    if name == "METHODS":
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_config(node: Any) -> MethodConfig:
    """Typed, checked config of the `method` group (a dict or config node with `name`)."""
    from ..config import typed

    methods = registry()
    name = (node or {}).get("name")
    check_choice("method", name, methods)
    return typed(node, methods[name], "method")


def build_method(cfg: MethodConfig, hidden_size: int) -> PromptMethod:
    """The module of a method config, for a backbone of this hidden size (`cfg.build(hidden_size)`)."""
    return cfg.build(hidden_size)

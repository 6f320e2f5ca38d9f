"""What every method shares: its config fields and traits, and the hooks the model calls.

A method is a config dataclass (its options, checked in `__post_init__`, so an invalid config cannot
exist; its traits as class attributes; `build(hidden_size)` makes its module) and an nn.Module, the
`PromptMethod`. `forward(states)` writes the prompt that the shared `InjectionEngine` inserts before
layer m (or returns None: no prompt). The optional hooks let a method reach into the frozen backbone
without a copy of the engine's loop:

- `attach(engine)`: called once with the frozen engine (vocabulary init, LoRA, unfreezing);
- `input_embeds(word, input_ids, positions)`: rewrite the word embeddings before the embedding layer
  (DEPT); `positions` are the tokens' real positions (0..L-1 from each row's first real token);
- `backbone_modules(engine)`: backbone modules the method trains (they follow train/eval mode);
- `aux_loss()`: an extra loss from the last forward pass (SMoP's load balancing);
- `param_lrs()`: learning rates for some of its parameters (DEPT's low-rank update).

A new method is one module in this package (a `MethodConfig` subclass whose `name` default is the
method's name, and its `PromptMethod`) and one YAML in `conf/method/`; `idspam.methods.METHODS` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import UserError
from ..injection import InjectionEngine, LowerStates


@dataclass
class MethodConfig:
    name: str = ""
    # Injection layer of this method; null: the run's `layer`. Methods defined at the input
    # (prompt tuning, P-tuning, DEPT, SMoP) set 0; LoRA and fine-tuning have no prompt (0).
    layer: int | None = None
    # Learning rate of this method's parameters and the head; null: optimizer.lr.
    lr: float | None = None

    # Traits (class attributes, not options):
    peft_type: ClassVar[str | None] = None  # the `peft_type` of its PEFT form (idspam.tuner); None: it has none
    trains_below: ClassVar[bool] = False  # it trains something below its layer: autograd runs there, no lower cache
    has_prompt: ClassVar[bool] = True  # it writes a prompt (LoRA and fine-tuning do not)
    peft_native: ClassVar[bool] = False  # it is one of PEFT's own tuners: its adapter is a plain PEFT folder (LoRA)
    registered: ClassVar[dict[str, type[MethodConfig]]] = {}  # name -> config class, filled by subclassing

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            MethodConfig.registered[name] = cls

    def __post_init__(self):
        if self.layer is not None and self.layer < 0:
            raise UserError(f"method.layer={self.layer} must be at least 0 (or null: the run's layer)")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"method.lr={self.lr} must be positive (or null: optimizer.lr)")

    @property
    def reads_embedding_output(self) -> bool:
        """Does the method read `LowerStates.embeddings` (the embedding output) at m > 0? The lower-stack cache
        stores it only then. True unless a method says otherwise (storing it is never wrong)."""
        return True

    def check_hidden(self, hidden_size: int) -> None:
        """Checks that need the backbone's hidden size (run before any weights load)."""

    def build(self, hidden_size: int) -> PromptMethod:
        """The method's module for a backbone of this hidden size."""
        raise NotImplementedError


def at_least(where: str, value: int, low: int = 1) -> None:
    if value < low:
        raise UserError(f"{where}={value} must be at least {low}")


def probability(where: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{where}={value} must be in [0, 1)")


class PromptMethod(nn.Module):
    """A method's module; `cfg` is its (valid) config."""

    def __init__(self, cfg: MethodConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def grad_below(self) -> bool:
        return self.cfg.trains_below

    def attach(self, engine: InjectionEngine) -> None:
        """Called once, after construction, with the frozen engine."""

    # (word_embeddings, input_ids, positions) -> the embeddings fed to the embedding layer; None: unchanged
    input_embeds = None

    def backbone_modules(self, engine: InjectionEngine) -> list[nn.Module]:
        return []

    def aux_loss(self) -> torch.Tensor | None:
        return None

    def param_lrs(self) -> dict[nn.Parameter, float]:
        return {}

    def forward(self, states: LowerStates) -> torch.Tensor | None:
        raise NotImplementedError


def batch_prompt(prompt: torch.Tensor, states: LowerStates) -> torch.Tensor:
    """A (t, n) input-independent prompt, repeated for the batch."""
    return prompt.unsqueeze(0).expand(states.hidden.shape[0], -1, -1)

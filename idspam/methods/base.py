"""What every method shares: its config fields, and the hooks the model calls.

A method is an nn.Module. `forward(states)` writes the prompt that the shared
`PromptInjectedEncoder` inserts before layer m (or returns None: no prompt). The optional hooks
let a method reach into the frozen backbone without a copy of the encoder loop:

- `attach(encoder)`: called once with the frozen encoder (vocabulary init, LoRA, unfreezing);
- `input_embeds(word, input_ids, positions)`: rewrite the word embeddings before the embedding layer
  (DEPT); `positions` are the tokens' real positions (0..L-1 from each row's first real token);
- `grad_below`: the method owns parameters below layer m, so autograd must run there;
- `backbone_modules(encoder)`: backbone modules the method trains (they follow train/eval mode);
- `aux_loss()`: an extra loss from the last forward pass (SMoP's load balancing);
- `param_lrs()`: learning rates for some of its parameters (DEPT's low-rank update).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..injection import LowerStates, PromptInjectedEncoder


@dataclass
class MethodConfig:
    name: str = ""
    # Injection layer of this method; null: the run's `layer`. Methods defined at the input
    # (prompt tuning, P-tuning, DEPT, SMoP) set 0; LoRA and fine-tuning have no prompt (0).
    layer: int | None = None
    # Learning rate of this method's parameters and the head; null: optimizer.lr.
    lr: float | None = None

    def check(self) -> None:
        if self.layer is not None and self.layer < 0:
            raise UserError(f"method.layer={self.layer} must be at least 0 (or null: the run's layer)")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"method.lr={self.lr} must be positive (or null: optimizer.lr)")

    def check_hidden(self, hidden_size: int) -> None:
        """Checks that need the backbone's hidden size (run before any weights load)."""


def at_least(where: str, value: int, low: int = 1) -> None:
    if value < low:
        raise UserError(f"{where}={value} must be at least {low}")


def probability(where: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{where}={value} must be in [0, 1)")


class PromptMethod(nn.Module):
    grad_below: bool = False

    def attach(self, encoder: PromptInjectedEncoder) -> None:
        """Called once, after construction, with the frozen encoder."""

    # (word_embeddings, input_ids, positions) -> the embeddings fed to the embedding layer; None: unchanged
    input_embeds = None

    def backbone_modules(self, encoder: PromptInjectedEncoder) -> list[nn.Module]:
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

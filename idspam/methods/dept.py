"""DEPT (Shi & Lipani 2024): a short soft prompt plus a low-rank update of the input embeddings.

    word embeddings of the real tokens += (A B)[p]       A: (max_length, r), B: (r, n), r = 45
                                                         p: each token's real position (padding side
                                                         and generated tokens alike)
    prompt: t trained vectors, prepended at the input (m = 0)

The prompt starts as prompt tuning's `vocab` init; A as Kaiming-uniform noise and B at zero, so
training starts from the plain embeddings. A and
B train with their own learning rate (`lowrank_lr`); the prompt with `method.lr` / optimizer.lr.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..injection import InjectionEngine, LowerStates
from .base import MethodConfig, PromptMethod, at_least, batch_prompt
from .prompt_tuning import vocab_init


@dataclass
class DEPTConfig(MethodConfig):
    name: str = "dept"
    layer: int | None = 0
    prompt_length: int = 10  # t
    rank: int = 45  # r
    max_length: int = 256  # rows of A: the longest input the update covers (task.max_length or more)
    lowrank_lr: float = 1.0e-4

    trains_below = True  # the update enters below layer m, through the embedding layer

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        at_least("method.rank", self.rank)
        at_least("method.max_length", self.max_length)
        if self.lowrank_lr <= 0:
            raise UserError(f"method.lowrank_lr={self.lowrank_lr} must be positive")

    def build(self, hidden_size: int) -> DecomposedPrompt:
        return DecomposedPrompt(self, hidden_size)


class DecomposedPrompt(PromptMethod):
    def __init__(self, cfg: DEPTConfig, hidden_size: int):
        super().__init__(cfg)
        t, r, n = cfg.prompt_length, cfg.rank, hidden_size
        self.prompt = nn.Parameter(torch.zeros(t, n))  # `attach` starts it from vocabulary tokens
        self.lora_a = nn.Parameter(torch.empty(cfg.max_length, r))
        self.lora_b = nn.Parameter(torch.zeros(r, n))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)

    def attach(self, engine: InjectionEngine) -> None:
        self.prompt.data.copy_(vocab_init(engine, self.cfg.prompt_length))  # as prompt tuning starts

    def input_embeds(self, word_embeddings: torch.Tensor, input_ids: torch.Tensor,
                     positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(word_embeddings.shape[1], device=word_embeddings.device)[None]
        L = int(positions.max()) + 1
        if L > self.cfg.max_length:
            raise UserError(f"an input of {L} tokens is longer than method.max_length={self.cfg.max_length}; "
                            "set method.max_length to task.max_length or more")
        return word_embeddings + (self.lora_a[positions] @ self.lora_b).to(word_embeddings.dtype)

    def param_lrs(self) -> dict[nn.Parameter, float]:
        return {self.lora_a: self.cfg.lowrank_lr, self.lora_b: self.cfg.lowrank_lr}

    def forward(self, states: LowerStates) -> torch.Tensor:
        return batch_prompt(self.prompt, states)

"""Prompt tuning (Lester et al. 2021): t static trained vectors, prepended at the input (m = 0).

With `layer` set above 0 it is a static deep prompt (LPT's static variant is `method=lpt
method.static=true`). Initialisation: `vocab` copies the embedding-layer output of t tokens drawn
at random from the vocabulary (Lester et al.'s recommended start, in the space the prompt enters at
m = 0), `random` draws U(-a, a) with a = `init_range`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import check_choice
from ..injection import InjectionEngine, LowerStates
from .base import MethodConfig, PromptMethod, at_least, batch_prompt, probability

INITS = ("vocab", "random")


@dataclass
class PromptTuningConfig(MethodConfig):
    name: str = "prompt_tuning"
    layer: int | None = 0
    prompt_length: int = 10  # t
    init: str = "vocab"  # vocab | random
    init_range: float = 0.5  # init=random: U(-init_range, init_range)
    seed_vocab_ids: list[int] | None = None  # init=vocab: these token ids instead of a random draw
    dropout: float = 0.0  # on the prompt vectors while training (Lester et al. use none)

    peft_type = "IDSPAM_PROMPT_TUNING"

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        probability("method.dropout", self.dropout)
        check_choice("method.init", self.init, INITS)

    @property
    def reads_embedding_output(self) -> bool:
        return False

    def build(self, hidden_size: int) -> PromptTuning:
        return PromptTuning(self, hidden_size)


def vocab_init(engine: InjectionEngine, t: int, ids: list[int] | None = None) -> torch.Tensor:
    """(t, n): the embedding output of t vocabulary tokens (`ids`, repeated as needed, or drawn at
    random), so that the prompt starts where real tokens live at the injection point (m = 0)."""
    table = engine.word_embedding_table
    if ids:
        picked = torch.tensor((list(ids) * t)[:t], device=table.device)
    else:
        picked = torch.randint(table.shape[0], (t,), device=table.device)
    return engine.embedding_output(picked[None])[0]


class PromptTuning(PromptMethod):
    def __init__(self, cfg: PromptTuningConfig, hidden_size: int):
        super().__init__(cfg)
        init = torch.empty(cfg.prompt_length, hidden_size).uniform_(-cfg.init_range, cfg.init_range)
        self.prompt = nn.Parameter(init)
        self.dropout = nn.Dropout(cfg.dropout)

    def attach(self, engine: InjectionEngine) -> None:
        if self.cfg.init != "vocab":
            return
        self.prompt.data.copy_(vocab_init(engine, self.cfg.prompt_length, self.cfg.seed_vocab_ids))

    def forward(self, states: LowerStates) -> torch.Tensor:
        return self.dropout(batch_prompt(self.prompt, states))

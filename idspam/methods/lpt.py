"""Late Prompt Tuning (Liu et al. 2022), as in its official code ("naive" prompt generator).

h = hidden state entering layer m (after layer m-1) of the first token on encoders, of the last real
token on decoders (the one that has read the input, as in the LPT authors' GPT-2 code), then
Linear(n, r) -> ReLU -> Linear(r, t*n) -> view (t, n) -> dropout, prepended before layer m.
`static: true` is LPT's static late prompt: t trained vectors at layer m.
The ID-SPAM paper's LPT counts (11 * 256 * n) are this generator with r = 256, t = 10 and no
biases (`bias: false`); the official code has biases (the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..injection import LowerStates
from .base import MethodConfig, PromptMethod, at_least, batch_prompt, probability


@dataclass
class LPTConfig(MethodConfig):
    name: str = "lpt"
    prompt_length: int = 10  # t
    bottleneck: int = 256  # r
    bias: bool = True
    dropout: float = 0.1
    static: bool = False  # a static late prompt instead of the generator

    peft_type = "IDSPAM_LPT"

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        at_least("method.bottleneck", self.bottleneck)
        probability("method.dropout", self.dropout)

    @property
    def reads_embedding_output(self) -> bool:
        return False  # the hidden state entering m

    def build(self, hidden_size: int) -> LatePrompt:
        return LatePrompt(self, hidden_size)


class LatePrompt(PromptMethod):
    def __init__(self, cfg: LPTConfig, hidden_size: int):
        super().__init__(cfg)
        n, t = hidden_size, cfg.prompt_length
        self.shape = (t, n)
        if cfg.static:
            self.prompt = nn.Parameter(torch.randn(t, n) * 0.02)
        else:
            self.down = nn.Linear(n, cfg.bottleneck, bias=cfg.bias)
            self.up = nn.Linear(cfg.bottleneck, t * n, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, states: LowerStates) -> torch.Tensor:
        if self.cfg.static:
            return self.dropout(batch_prompt(self.prompt, states))
        summary = states.summary_token()  # first token on encoders, last real token on decoders
        return self.dropout(self.up(F.relu(self.down(summary))).view(-1, *self.shape))

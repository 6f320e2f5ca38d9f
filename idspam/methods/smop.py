"""SMoP (Choi et al. 2023): a sparse mixture of short soft prompts, prepended at the input.

A router (Linear n -> K) reads the masked mean of the input's word embeddings; each input gets
the top-k of K prompts (k = 1 by default), weighted by their router probabilities so that the
router learns from the task loss. A Switch-style load-balancing loss,
`balance_coef * K * sum_i f_i * P_i` (f_i: share of the batch routed to prompt i, P_i: mean router
probability of prompt i), keeps the prompts in use; `router_noise` adds SMoP's Gaussian router
perturbation during training. Every input sees t prompt vectors (t = 10, as for every baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..injection import LowerStates
from .base import MethodConfig, PromptMethod, at_least


@dataclass
class SMoPConfig(MethodConfig):
    name: str = "smop"
    layer: int | None = 0
    prompt_length: int = 10  # t: length of each short prompt, and what each input sees
    num_prompts: int = 4  # K
    top_k: int = 1
    balance_coef: float = 0.01
    router_noise: float = 0.0  # std of the Gaussian perturbation of the router logits (training only)
    init_range: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        at_least("method.num_prompts", self.num_prompts)
        at_least("method.top_k", self.top_k)
        if self.top_k > self.num_prompts:
            raise UserError(f"method.top_k={self.top_k} must be at most method.num_prompts={self.num_prompts}")
        if self.balance_coef < 0 or self.router_noise < 0:
            raise UserError(f"method.balance_coef={self.balance_coef} and method.router_noise={self.router_noise} "
                            "must be at least 0")

    @property
    def reads_embedding_output(self) -> bool:
        return False  # the word embeddings

    def build(self, hidden_size: int) -> SparsePromptMixture:
        return SparsePromptMixture(self, hidden_size)


class SparsePromptMixture(PromptMethod):
    def __init__(self, cfg: SMoPConfig, hidden_size: int):
        super().__init__(cfg)
        K, t, n = cfg.num_prompts, cfg.prompt_length, hidden_size
        self.prompts = nn.Parameter(torch.empty(K, t, n).uniform_(-cfg.init_range, cfg.init_range))
        self.router = nn.Linear(n, K)
        self._aux: torch.Tensor | None = None

    def route(self, states: LowerStates) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities (B, K), and the chosen prompts (B, k) with their weights (B, k)."""
        E, keep = states.word_embeddings, states.attention_mask.to(states.hidden.dtype).unsqueeze(-1)
        pooled = (E * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        logits = self.router(pooled)
        if self.training and self.cfg.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.cfg.router_noise
        probs = logits.float().softmax(-1)
        weights, chosen = probs.topk(self.cfg.top_k, dim=-1)
        return probs, chosen, weights

    def forward(self, states: LowerStates) -> torch.Tensor:
        probs, chosen, weights = self.route(states)
        prompt = (self.prompts[chosen] * weights[..., None, None].to(self.prompts.dtype)).sum(1)  # (B, t, n)
        K = self.cfg.num_prompts
        share = F.one_hot(chosen, K).float().sum(1).mean(0) / self.cfg.top_k  # f_i
        self._aux = self.cfg.balance_coef * K * (share * probs.mean(0)).sum()
        return prompt

    def aux_loss(self) -> torch.Tensor | None:
        return self._aux if self.training else None

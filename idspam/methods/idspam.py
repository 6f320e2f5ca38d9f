"""ID-SPAM's prompt generator (PAPER.md eqs. 1-2): self-attention over the input's token
embeddings, masked mean pooling, a bottleneck MLP, reshaped into t prompt vectors.

    A = mean_tokens softmax((E Wq)(E Wk)^T / sqrt(d_k)) (E Wv)          (n)
    S = view_t( relu( W_up relu(W_down A + b_down) + b_up ) )            (t, n)

Points the paper leaves open are options (defaults in brackets): heads [1], d_k [n / heads],
biases in Wq/Wk/Wv [off], biases in the MLP [on], bottleneck c [128], final ReLU [on],
E = word embeddings alone [word] or the full embedding output [full], prompt dropout [0.1].
Padding is masked as a key in the attention and left out of the mean.
`attention: false` is the paper's ablation (Table 3): the masked mean of E, no attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, check_choice
from ..injection import LowerStates
from .base import MethodConfig, PromptMethod, at_least, probability

EMBEDDING_SOURCES = ("word", "full")


@dataclass
class IDSPAMConfig(MethodConfig):
    name: str = "idspam"
    prompt_length: int = 10  # t
    bottleneck: int = 128  # c
    attention: bool = True  # false: mean-pooling ablation
    num_heads: int = 1
    head_dim: int | None = None  # d_k per head; None: hidden_size // num_heads
    qkv_bias: bool = False
    mlp_bias: bool = True
    final_relu: bool = True
    embedding_source: str = "word"  # word | full
    dropout: float = 0.1

    peft_type = "IDSPAM"

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        at_least("method.bottleneck", self.bottleneck)
        at_least("method.num_heads", self.num_heads)
        if self.head_dim is not None:
            at_least("method.head_dim", self.head_dim)
        probability("method.dropout", self.dropout)
        check_choice("method.embedding_source", self.embedding_source, EMBEDDING_SOURCES)

    @property
    def reads_embedding_output(self) -> bool:
        return self.embedding_source == "full"

    def check_hidden(self, hidden_size: int) -> None:
        if self.attention and hidden_size % self.num_heads:
            raise UserError(
                f"method.num_heads={self.num_heads} must divide the hidden size {hidden_size} "
                "(values are split per head)"
            )

    def build(self, hidden_size: int) -> IDSPAMGenerator:
        self.check_hidden(hidden_size)
        return IDSPAMGenerator(self, hidden_size)


@dataclass
class IDSPAMMeanPoolConfig(IDSPAMConfig):
    """The paper's ablation (Table 3): the masked mean of E instead of self-attention."""

    name: str = "idspam_meanpool"
    attention: bool = False

    peft_type = "IDSPAM_MEANPOOL"

    def __post_init__(self):
        super().__post_init__()
        if self.attention:
            raise UserError("method=idspam_meanpool is the ablation without attention; it needs method.attention=false")


class IDSPAMGenerator(PromptMethod):
    """Input-dependent prompt: (B, L, n) token embeddings -> (B, t, n) prompt."""

    def __init__(self, cfg: IDSPAMConfig, hidden_size: int):
        super().__init__(cfg)
        n, t, c = hidden_size, cfg.prompt_length, cfg.bottleneck
        self.hidden_size, self.prompt_length = n, t
        if cfg.attention:
            self.head_dim = cfg.head_dim or n // cfg.num_heads
            qk = cfg.num_heads * self.head_dim
            self.query = nn.Linear(n, qk, bias=cfg.qkv_bias)
            self.key = nn.Linear(n, qk, bias=cfg.qkv_bias)
            self.value = nn.Linear(n, n, bias=cfg.qkv_bias)
        self.down = nn.Linear(n, c, bias=cfg.mlp_bias)
        self.up = nn.Linear(c, t * n, bias=cfg.mlp_bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def pool(self, E: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 1: masked self-attention over E, then the mean over real tokens -> (B, n)."""
        keep = mask.to(E.dtype).unsqueeze(-1)  # (B, L, 1)
        if self.cfg.attention:
            B, L, n = E.shape
            h = self.cfg.num_heads
            q = self.query(E).view(B, L, h, self.head_dim).transpose(1, 2)
            k = self.key(E).view(B, L, h, self.head_dim).transpose(1, 2)
            v = self.value(E).view(B, L, h, n // h).transpose(1, 2)
            key_mask = mask.bool()[:, None, None, :]  # (B, 1, 1, L): padding is never attended to
            E = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(B, L, n)
        return (E * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def forward(self, states: LowerStates) -> torch.Tensor:
        E = states.word_embeddings if self.cfg.embedding_source == "word" else states.embeddings
        A = self.pool(E, states.attention_mask)
        S = self.up(F.relu(self.down(A)))
        if self.cfg.final_relu:
            S = F.relu(S)
        return self.dropout(S.view(-1, self.prompt_length, self.hidden_size))

"""Output heads on the final hidden states of the real tokens (prompt positions already removed).

- ClassificationHead (`head=cls`): trained, on the first input token; num_labels=1 is regression (STS-B).
- MLMVerbalizerHead (`head=mlm`): the backbone's frozen MLM head at the `<mask>` token, read through
  the label words (LPT's setup); it trains nothing.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1, dense: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if dense:  # HF RobertaClassificationHead style
            layers += [nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_size, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.net(hidden[:, 0])


class MLMVerbalizerHead(nn.Module):
    def __init__(self, mlm_head: nn.Module, label_word_ids: list[int], mask_token_id: int):
        super().__init__()
        self.mlm_head = mlm_head
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids), persistent=False)
        self.mask_token_id = mask_token_id

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        is_mask = batch["input_ids"] == self.mask_token_id
        position = is_mask.int().argmax(dim=1)  # tokenisation guarantees exactly one <mask>
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), position]
        return self.mlm_head(at_mask)[:, self.label_word_ids]

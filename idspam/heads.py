"""Output heads on the final hidden states of the real tokens (prompt positions already removed).

- ClassificationHead (`head=cls`): trained, on the first input token (encoders) or the last real token
  (decoders: found from the attention mask, so right and left padding and a pad id equal to the eos id
  are all read correctly); num_labels=1 is regression (STS-B).
- VerbalizerHead (`head=mlm`, `head=lm`): the backbone's frozen LM head read through one label word per
  class; it trains nothing. On an encoder (mlm) it reads the `<mask>` token; on a decoder (lm) the
  last real token, whose next-token logits score the label words (LPT's generative verbalizer).

Each reads one position per example (`positions(batch)`, then `readout(states there)`), so the model
can have the last layer compute only there (`model.prune_last_layer`).
"""

from __future__ import annotations

import torch
from torch import nn

from .injection import gather_positions, last_real_position

READ_AT = ("first", "last", "mask")


def read_positions(batch: dict, read_at: str, mask_token_id: int | None = None) -> torch.Tensor:
    """(B,) the position a head reads in each row."""
    if read_at == "first":
        return torch.zeros(batch["input_ids"].shape[0], dtype=torch.long, device=batch["input_ids"].device)
    if read_at == "last":
        return last_real_position(batch["attention_mask"])
    return (batch["input_ids"] == mask_token_id).int().argmax(dim=1)  # tokenisation guarantees one <mask>


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1, dense: bool = False,
                 read_at: str = "first"):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if dense:  # HF RobertaClassificationHead style
            layers += [nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_size, num_labels))
        self.net = nn.Sequential(*layers)
        self.read_at = read_at

    def positions(self, batch: dict) -> torch.Tensor:
        return read_positions(batch, self.read_at)

    def readout(self, at: torch.Tensor) -> torch.Tensor:
        return self.net(at.to(self.net[-1].weight.dtype))

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.readout(gather_positions(hidden, self.positions(batch)))


class VerbalizerHead(nn.Module):
    def __init__(self, lm_head: nn.Module, label_word_ids: list[int], read_at: str = "mask",
                 mask_token_id: int | None = None, softcap: float | None = None):
        super().__init__()
        self.lm_head = lm_head
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids), persistent=False)
        self.read_at, self.mask_token_id, self.softcap = read_at, mask_token_id, softcap

    def positions(self, batch: dict) -> torch.Tensor:
        return read_positions(batch, self.read_at, self.mask_token_id)

    def readout(self, at: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(at)[:, self.label_word_ids].float()
        if self.softcap:  # Gemma2 caps its final logits
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.readout(gather_positions(hidden, self.positions(batch)))


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



def lm_target_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the positions whose next token is a target token (labels[:, 1:] != -100): the
    only positions the causal-LM loss reads. Input, padding and prompt positions (the model drops the
    prompt's states before the head) carry -100."""
    return (labels[:, 1:] != -100).nonzero(as_tuple=True)


def lm_targets(labels: torch.Tensor) -> torch.Tensor:
    """(N,) the target ids `GenerateHead` predicts, in the order of `lm_target_positions`."""
    return labels[:, 1:][labels[:, 1:] != -100]


class GenerateHead(nn.Module):
    """`head=generate`: a decoder's frozen causal-LM head over every position, trained (through the prompt
    method) on the target tokens only. `logits(hidden)` is the head at every position; `forward` returns the
    (N, vocab) logits at the N positions that predict a target token (what the loss reads), computing the head
    only there. It has no `positions` method on purpose: the model never prunes the last layer for it.
    `generation` holds the settings generation uses (HF `generate` keywords); `tokenizer` decodes."""

    generative = True

    def __init__(self, lm_head: nn.Module, generation: dict, tokenizer=None, softcap: float | None = None):
        super().__init__()
        self.lm_head, self.generation, self.tokenizer, self.softcap = lm_head, generation, tokenizer, softcap

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        rows, cols = lm_target_positions(batch["labels"])
        return self.logits(hidden[rows, cols])


def generation_kwargs(head_cfg, eos_id: int, pad_id: int) -> dict:
    """HF `generate` keywords of the run's generation settings (head.max_new_tokens, strategy...)."""
    kwargs = {"max_new_tokens": head_cfg.max_new_tokens, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if head_cfg.strategy == "sample":
        kwargs.update(do_sample=True, temperature=head_cfg.temperature, top_p=head_cfg.top_p)
    elif head_cfg.strategy == "beam":
        kwargs.update(do_sample=False, num_beams=head_cfg.num_beams)
    else:
        kwargs.update(do_sample=False, num_beams=1)
    return kwargs

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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError
from .families import family_for_config, softcap
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
    """`head=cls`: dropout and a trained linear layer (HF's dense + tanh first with `dense`) on the first input
    token (encoders) or the last real token (decoders); one output is regression."""

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
    """`head=mlm` / `head=lm`: the backbone's frozen LM head at one position (the `<mask>` token, or a
    decoder's last real token), read through one label word per class; trains nothing."""

    def __init__(self, lm_head: nn.Module, label_word_ids: list[int], read_at: str = "mask",
                 mask_token_id: int | None = None, softcap: float | None = None):
        super().__init__()
        self.lm_head = lm_head
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids), persistent=False)
        self.read_at, self.mask_token_id, self.softcap = read_at, mask_token_id, softcap

    def positions(self, batch: dict) -> torch.Tensor:
        return read_positions(batch, self.read_at, self.mask_token_id)

    def readout(self, at: torch.Tensor) -> torch.Tensor:
        return softcap(self.lm_head(at)[:, self.label_word_ids].float(), self.softcap)  # Gemma2 caps its logits

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
        return softcap(self.lm_head(hidden).float(), self.softcap)

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


# ---------------------------------------------------------------------------------------------- the registry

def _cls(run, spec, backbone, tokenizer, engine) -> nn.Module:
    return ClassificationHead(engine.hidden_size, spec.num_labels, run.head.dropout, run.head.dense,
                              "last" if engine.causal else "first")


def _verbalizer(run, spec, backbone, tokenizer, engine) -> nn.Module:
    from .tasks import mlm_verbalizer
    from .text import label_word_ids

    ids = label_word_ids(tokenizer, mlm_verbalizer(spec, run.task)[1])
    if engine.causal:
        return VerbalizerHead(backbone.lm_head, ids, "last", softcap=final_softcap(backbone.config))
    return VerbalizerHead(backbone.lm_head, ids, "mask", tokenizer.mask_token_id)


def _generate(run, spec, backbone, tokenizer, engine) -> nn.Module:
    from .text import eos_token_id

    eos = eos_token_id(tokenizer, run.head.eos_token)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return GenerateHead(backbone.lm_head, generation_kwargs(run.head, eos, pad), tokenizer,
                        softcap=final_softcap(backbone.config))


def final_softcap(config) -> float | None:
    """The cap the family's causal-LM class puts on its final logits (Gemma2's `final_logit_softcapping`), or
    None: the family decides (`Family.final_softcap`), as generation does."""
    family = family_for_config(config)
    return family.final_softcap(config) if family is not None else None


@dataclass(frozen=True)
class HeadKind:
    """What a `head=` choice is: the families it runs on and what it needs, so that no other module lists head
    names. `build(run, spec, backbone, tokenizer, engine)` makes the head module."""

    name: str
    families: tuple[str, ...]  # "encoder", "decoder"
    lm_head: bool  # reads the backbone's frozen LM head (masked LM on encoders, causal LM on decoders)
    verbalizer: bool  # reads the task through its template and label words
    generative: bool  # trained on target tokens, evaluated by generating
    trains: bool  # has parameters of its own
    needs: str  # what it is, for the one-line refusal on the wrong family
    build: Callable

    def check_family(self, decoder: bool, model_name: str) -> None:
        family = "decoder" if decoder else "encoder"
        if family not in self.families:
            valid = ", ".join(h.name for h in HEADS.values() if family in h.families)
            raise UserError(f"head={self.name} {self.needs}; model {model_name!r} is an {family} "
                            f"(valid heads here: {valid})".replace("is an decoder", "is a decoder"))


HEADS: dict[str, HeadKind] = {kind.name: kind for kind in (
    HeadKind("cls", ("encoder", "decoder"), lm_head=False, verbalizer=False, generative=False, trains=True,
             needs="is a trained linear head", build=_cls),
    HeadKind("mlm", ("encoder",), lm_head=True, verbalizer=True, generative=False, trains=False,
             needs="needs a masked-LM encoder", build=_verbalizer),
    HeadKind("lm", ("decoder",), lm_head=True, verbalizer=True, generative=False, trains=False,
             needs="reads a decoder's next-token logits", build=_verbalizer),
    HeadKind("generate", ("decoder",), lm_head=True, verbalizer=False, generative=True, trains=False,
             needs="trains a decoder's causal-LM head", build=_generate),
)}


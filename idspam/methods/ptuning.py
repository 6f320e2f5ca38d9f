"""P-tuning (Liu et al. 2021): a prompt reparameterised by an encoder, prepended at the input.

The encoder is peft's `PromptEncoder`: t trained input vectors through an MLP (the option the
ID-SPAM paper names; Linear n->h, ReLU, Linear h->h, ReLU, Linear h->n) or through a
bidirectional LSTM and a two-layer MLP (`reparameterization: lstm`). h defaults to n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import check_choice
from ..injection import LowerStates
from .base import MethodConfig, PromptMethod, at_least, batch_prompt, probability

REPARAMETERIZATIONS = ("mlp", "lstm")


@dataclass
class PTuningConfig(MethodConfig):
    name: str = "ptuning"
    layer: int | None = 0
    prompt_length: int = 10  # t
    reparameterization: str = "mlp"  # mlp | lstm
    encoder_hidden_size: int | None = None  # h; null: the backbone's hidden size
    encoder_num_layers: int = 2  # lstm only
    encoder_dropout: float = 0.0  # lstm only

    peft_type = "IDSPAM_PTUNING"

    def __post_init__(self):
        super().__post_init__()
        at_least("method.prompt_length", self.prompt_length)
        check_choice("method.reparameterization", self.reparameterization, REPARAMETERIZATIONS)
        if self.encoder_hidden_size is not None:
            at_least("method.encoder_hidden_size", self.encoder_hidden_size)
        at_least("method.encoder_num_layers", self.encoder_num_layers)
        probability("method.encoder_dropout", self.encoder_dropout)

    @property
    def reads_embedding_output(self) -> bool:
        return False

    def build(self, hidden_size: int) -> PTuning:
        return PTuning(self, hidden_size)


class PTuning(PromptMethod):
    def __init__(self, cfg: PTuningConfig, hidden_size: int):
        from peft import PromptEncoderConfig
        from peft.tuners.p_tuning import PromptEncoder

        super().__init__(cfg)
        self.encoder = PromptEncoder(PromptEncoderConfig(
            task_type=None,
            num_virtual_tokens=cfg.prompt_length,
            token_dim=hidden_size,
            num_transformer_submodules=1,
            encoder_reparameterization_type=cfg.reparameterization.upper(),
            encoder_hidden_size=cfg.encoder_hidden_size or hidden_size,
            encoder_num_layers=cfg.encoder_num_layers,
            encoder_dropout=cfg.encoder_dropout,
        ))
        self.register_buffer("indices", torch.arange(cfg.prompt_length), persistent=False)

    def forward(self, states: LowerStates) -> torch.Tensor:
        return batch_prompt(self.encoder(self.indices), states)

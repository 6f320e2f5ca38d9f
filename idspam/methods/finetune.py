"""Full fine-tuning: every backbone weight the forward pass uses is trained (embeddings and all
layers, and a decoder's final norm; an unused pooler stays frozen). On a bfloat16/float16 backbone
(`model.dtype`) the weights train in that dtype: use float32 for fine-tuning comparisons. No prompt; the backbone
follows train/eval mode, so its dropout is on in training as in standard fine-tuning. Defaults to lr 1e-5 (the
paper's grid)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..injection import InjectionEngine, LowerStates
from .base import MethodConfig, PromptMethod


@dataclass
class FinetuneConfig(MethodConfig):
    name: str = "finetune"
    layer: int | None = 0
    lr: float | None = 1.0e-5

    trains_below = True
    has_prompt = False
    trains_frozen_weights = True

    def build(self, hidden_size: int) -> Finetune:
        return Finetune(self, hidden_size)


class Finetune(PromptMethod):
    def __init__(self, cfg: FinetuneConfig, hidden_size: int):
        super().__init__(cfg)

    def backbone_modules(self, engine: InjectionEngine) -> list[nn.Module]:
        norm = engine.family.final_norm(engine.base)  # decoders' final norm is used by every forward
        return [engine.embedding_module, engine.layers, *([norm] if norm is not None else [])]

    def attach(self, engine: InjectionEngine) -> None:
        for module in self.backbone_modules(engine):
            module.requires_grad_(True)

    def forward(self, states: LowerStates) -> None:
        return None

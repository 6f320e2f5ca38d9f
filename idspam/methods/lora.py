"""LoRA (Hu et al. 2022) through Hugging Face PEFT: `LoraConfig` on the query and value projections
by default, injected into the frozen backbone in place. No prompt. Only the LoRA matrices train;
their dropout follows train/eval mode while the frozen backbone keeps `model.backbone_mode`.

`save_adapter(folder)` writes PEFT's own format (adapter_config.json, adapter_model.safetensors),
which `peft.PeftModel.from_pretrained(<the backbone>, folder)` loads; `load_adapter` reads it back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import UserError, check_choice
from ..injection import LowerStates, PromptInjectedEncoder
from .base import MethodConfig, PromptMethod, at_least, probability


@dataclass
class LoRAConfig(MethodConfig):
    name: str = "lora"
    layer: int | None = 0
    lr: float | None = 5.0e-4
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    # null: the family's attention projections (encoders: query, value; GPT-2: c_attn, its fused q/k/v;
    # Llama-style decoders: q_proj, v_proj)
    target_modules: list[str] | None = None
    bias: str = "none"  # none | all | lora_only (PEFT's option)

    def check(self) -> None:
        super().check()
        at_least("method.r", self.r)
        probability("method.dropout", self.dropout)
        if self.target_modules is not None and not self.target_modules:
            raise UserError("method.target_modules is empty; name the backbone modules to adapt, e.g. [query,value]")
        check_choice("method.bias", self.bias, ("none", "all", "lora_only"))

    def peft_config(self, default_targets: tuple[str, ...] = ("query", "value"), fan_in_fan_out: bool = False):
        from peft import LoraConfig

        targets = list(self.target_modules) if self.target_modules else list(default_targets)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, bias=self.bias, fan_in_fan_out=fan_in_fan_out)


class LoRA(PromptMethod):
    grad_below = True  # the adapted projections sit in every layer

    def __init__(self, cfg: LoRAConfig, hidden_size: int):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self._peft: tuple = ()  # the PeftModel wrapping the backbone (kept out of this module's children)

    @property
    def peft_model(self):
        if not self._peft:
            raise RuntimeError("LoRA.attach(encoder) has not been called")
        return self._peft[0]

    def attach(self, encoder: PromptInjectedEncoder) -> None:
        from peft import get_peft_model

        try:
            with warnings.catch_warnings():  # a transformers deprecation that PEFT triggers; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                self._peft = (get_peft_model(encoder.base, self.cfg.peft_config(
                    encoder.layout.lora_targets, encoder.layout.conv1d)),)  # injects into encoder.base
        except ValueError as e:
            names = sorted({name.rsplit(".", 1)[-1] for name, m in encoder.base.named_modules()
                            if isinstance(m, nn.Linear)})
            raise UserError(f"method.target_modules={list(self.cfg.target_modules or encoder.layout.lora_targets)} do not match the backbone's "
                            f"layers; linear modules there: {', '.join(names)}") from e

    def backbone_modules(self, encoder: PromptInjectedEncoder) -> list[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in encoder.base.modules() if isinstance(m, LoraLayer)]

    def save_adapter(self, folder: str | Path) -> None:
        self.peft_model.save_pretrained(str(folder))

    def load_adapter(self, folder: str | Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(self.peft_model, load_peft_weights(str(folder), device="cpu"))

    def forward(self, states: LowerStates) -> None:
        return None

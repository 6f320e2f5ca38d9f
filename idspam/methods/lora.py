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
from typing import ClassVar

from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import UserError, check_choice
from ..injection import InjectionEngine, LowerStates
from .base import MethodConfig, PromptMethod, at_least, probability


@dataclass
class LoRAConfig(MethodConfig):
    name: str = "lora"
    layer: int | None = 0
    peft_native: ClassVar[bool] = True
    lr: float | None = 5.0e-4
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    # null: PEFT's defaults for the model type (BERT/RoBERTa: query, value; GPT-2: c_attn, its fused q/k/v;
    # Llama-style decoders: q_proj, v_proj)
    target_modules: list[str] | None = None
    bias: str = "none"  # none | all | lora_only (PEFT's option)

    def __post_init__(self):
        super().__post_init__()
        at_least("method.r", self.r)
        probability("method.dropout", self.dropout)
        if self.target_modules is not None and not self.target_modules:
            raise UserError("method.target_modules is empty; name the backbone modules to adapt, e.g. [query,value]")
        check_choice("method.bias", self.bias, ("none", "all", "lora_only"))

    trains_below = True  # the adapted projections sit in every layer
    has_prompt = False

    @property
    def reads_embedding_output(self) -> bool:
        return False

    def build(self, hidden_size: int) -> LoRA:
        return LoRA(self, hidden_size)

    def check_targets(self, base: nn.Module) -> None:
        """Every name in `target_modules` matches a module of the bare backbone `base` (built on the meta device
        from its config: no weights) as PEFT matches them: a string is a regular expression over the full module
        names, a list entry matches a name equal to it or ending in `.<entry>`. One line naming the names that
        match nothing and the linear modules there are."""
        import re

        targets = self.target_modules
        if not targets:
            return
        names = [name for name, _ in base.named_modules() if name]
        if isinstance(targets, str):
            bad = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
        else:
            bad = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
        if bad:
            raise UserError(f"method.target_modules: {', '.join(map(repr, bad))} match no module of the backbone; "
                            f"its linear modules: {', '.join(linear_names(base))}")

    def peft_config(self, model_type: str | None = None):
        """PEFT's `LoraConfig` of these options. With `target_modules` null PEFT picks the model type's own
        defaults (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) and sets `fan_in_fan_out` for GPT-2's
        Conv1D itself; only where that table has no entry for a supported model type do we name the targets."""
        from peft import LoraConfig

        targets = list(self.target_modules) if self.target_modules else PEFT_TARGET_GAPS.get(model_type)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          bias=self.bias)


# Supported model types that PEFT 0.21's default-target table lacks (measured: it raises "Please specify
# `target_modules`"): CamemBERT's layers are RoBERTa's, so RoBERTa's defaults.
PEFT_TARGET_GAPS = {"camembert": ["query", "value"]}


def linear_names(base: nn.Module) -> list[str]:
    """The short names of the backbone's linear modules (what target_modules usually names): query, value, ..."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in base.named_modules() if isinstance(m, nn.Linear | Conv1D)})


class LoRA(PromptMethod):
    def __init__(self, cfg: LoRAConfig, hidden_size: int):
        super().__init__(cfg)
        self._peft: tuple = ()  # the PeftModel wrapping the backbone (kept out of this module's children)

    @property
    def peft_model(self):
        if not self._peft:
            raise RuntimeError("LoRA.attach(engine) has not been called")
        return self._peft[0]

    def attach(self, engine: InjectionEngine) -> None:
        from peft import get_peft_model

        try:
            with warnings.catch_warnings():  # a transformers deprecation that PEFT triggers; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                warnings.filterwarnings("ignore", message=".*fan_in_fan_out is set to False.*")  # GPT-2's Conv1D
                config = self.cfg.peft_config(engine.config.model_type)
                self._peft = (get_peft_model(engine.base, config),)  # injects into engine.base
        except ValueError as e:
            raise UserError(f"method.target_modules={self.cfg.target_modules} do not match the backbone's layers; "
                            f"linear modules there: {', '.join(linear_names(engine.base))}") from e

    def backbone_modules(self, engine: InjectionEngine) -> list[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in engine.base.modules() if isinstance(m, LoraLayer)]

    def save_adapter(self, folder: str | Path) -> None:
        self.peft_model.save_pretrained(str(folder))

    def load_adapter(self, folder: str | Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(self.peft_model, load_peft_weights(str(folder), device="cpu"))

    def forward(self, states: LowerStates) -> None:
        return None

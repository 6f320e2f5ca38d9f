"""ID-SPAM, LPT and idspam's prompt tuning / P-tuning as Hugging Face PEFT methods.

    from peft import get_peft_model, PeftModel
    import idspam                                    # registers the methods with PEFT (once peft is imported)
    model = get_peft_model(hf_model, idspam.IDSPAMConfig(layer=3, prompt_length=10))
    model.save_pretrained("out/adapter")             # adapter_config.json + adapter_model.safetensors
    PeftModel.from_pretrained(hf_model_again, "out/adapter")

How it plugs in. PEFT 0.21 has no public registration for a new method type (`register_peft_method`
accepts only names already in its `PeftType` enum), so `register()` writes idspam's types into PEFT's
own type tables (`peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING`, `..._TUNER_MAPPING`,
`..._PREFIX_MAPPING`, the dicts `register_peft_method` fills) under string keys (`IDSPAM`,
`IDSPAM_LPT`, ...; `PeftType` is a `str` enum, so PEFT's lookups by `config.peft_type` find them).
The wing is laid out as PEFT's own tuners are: `config.py` (the `PeftConfig` of each method),
`layer.py` (the tuner layer, `PromptInjectionLayer`, attached to the backbone as `idspam_injection`,
holding one prompt method per adapter and the injection engine), `model.py` (the `BaseTuner`).
PEFT's `modules_to_save` trains and saves a classifier as for any PEFT method.

`import idspam` registers the types as soon as PEFT is imported (a post-import hook), so
`PeftModel.from_pretrained` finds them whichever is imported first; `idspam.tuner.register()` does
it explicitly.

These are PEFT internals: the integration is tested on PEFT `PEFT_MINOR` only and refuses another
minor version with one line. Limits: one prompt adapter active at a time (several can be loaded and
switched with `set_adapter`), no merging into weights, no mixing with LoRA in one PeftModel,
`output_hidden_states`/`output_attentions` are not returned while a prompt is active.
"""

from __future__ import annotations

import functools

PEFT_MINOR = "0.21"
_EXPORTS = {
    "config": ("PromptInjectionConfig", "IDSPAMConfig", "IDSPAMMeanPoolConfig", "LPTConfig",
               "LayerPromptTuningConfig", "LayerPTuningConfig", "CONFIGS", "peft_config_for"),
    "model": ("PromptInjectionModel", "PREFIX"),
    "layer": ("PromptInjectionLayer", "ATTRIBUTE"),
}


def check_peft_version() -> None:
    """One line, naming both versions, when the installed PEFT is not the minor version this is tested on."""
    import peft

    from ..errors import UserError

    minor = ".".join(peft.__version__.split(".")[:2])
    if minor != PEFT_MINOR:
        upper = f"{PEFT_MINOR.split('.')[0]}.{int(PEFT_MINOR.split('.')[1]) + 1}"
        raise UserError(f"idspam's PEFT integration uses PEFT internals tested on peft {PEFT_MINOR}.x only; this "
                        f"is peft {peft.__version__}: pip install 'peft>={PEFT_MINOR},<{upper}'")


@functools.cache
def register() -> None:
    """Make PEFT know the idspam types (idempotent): after it, `get_peft_model` takes their configs and
    `PeftModel.from_pretrained` reads their folders. Raises UserError on an untested PEFT minor version."""
    check_peft_version()
    from peft import mapping

    from .config import CONFIGS
    from .model import PREFIX, PromptInjectionModel

    for cls in CONFIGS.values():
        peft_type = cls.method_peft_type()
        mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = cls
        mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = PromptInjectionModel
        mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = PREFIX


def __getattr__(name: str):
    for module, names in _EXPORTS.items():
        if name in names:
            register()  # the version check first: PEFT internals of another version may not even import
            import importlib

            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PEFT_MINOR", "check_peft_version", "register", *(n for names in _EXPORTS.values() for n in names)]

# Last, once everything above is defined: PEFT is imported here, before any wing module starts (the package runs
# first), so PEFT's post-import hook (idspam/__init__.py) registers the types while no wing module is
# half-imported; a wing module importing PEFT itself would leave the hook a circular import.
import peft as _peft  # noqa: E402, F401


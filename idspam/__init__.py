"""idspam: input-dependent soft prompts (ID-SPAM, ACL 2025) and PEFT baselines on frozen language models.

Python API (the Hydra runner, `idspam-run`, trains through the same injection engine):

- `IDSPAMConfig`, `LPTConfig`, `IDSPAMMeanPoolConfig`, `LayerPromptTuningConfig`, `LayerPTuningConfig`: PEFT
  configs of the prompt methods PEFT lacks; `peft.get_peft_model(model, IDSPAMConfig(layer=6))` works after
  `import idspam` (PEFT 0.21: `PEFT_MINOR`).
- `wrap(model, "idspam", layer=6, **options)`: the same, by method name.
- `load_adapter(folder)`: a `Predictor` (`.predict(texts)`, `.logits(texts)`) for an adapter written by
  `idspam-run` (any format idspam wrote) or a PEFT sequence-classification adapter.

`import idspam` registers the idspam methods with PEFT (so that `PeftModel.from_pretrained` reads their
folders); on a PEFT minor version other than the tested one, using them fails with one line naming both.
"""

__version__ = "0.1.0"

_PEFT_ERROR = None
try:
    from . import peft_tuner as _peft_tuner  # noqa: F401 - registers IDSPAM, IDSPAM_LPT... with PEFT
except ImportError as e:  # PEFT missing: the runner's other methods still work
    _PEFT_ERROR = e
except Exception as e:  # noqa: BLE001 - idspam.errors.UserError: another PEFT minor version
    _PEFT_ERROR = e

_PEFT_NAMES = {"IDSPAMConfig", "IDSPAMMeanPoolConfig", "LPTConfig", "LayerPromptTuningConfig", "LayerPTuningConfig",
               "PromptInjectionConfig", "PromptInjectionModel", "PEFT_MINOR"}
_API_NAMES = {"wrap", "load_adapter", "Predictor"}

__all__ = sorted(_PEFT_NAMES | _API_NAMES | {"__version__"})


def __getattr__(name: str):
    if name in _PEFT_NAMES:
        if _PEFT_ERROR is not None:
            raise _PEFT_ERROR
        from . import peft_tuner

        return getattr(peft_tuner, name)
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'idspam' has no attribute {name!r}")


def __dir__():
    return __all__

"""idspam: input-dependent soft prompts (ID-SPAM, ACL 2025) and PEFT baselines on frozen language models.

The library (the Hydra runner `idspam-run` trains through the same injection engine):

- `IDSPAMConfig`, `LPTConfig`, `IDSPAMMeanPoolConfig`, `LayerPromptTuningConfig`, `LayerPTuningConfig`: PEFT
  configs of the prompt methods PEFT lacks; `peft.get_peft_model(model, IDSPAMConfig(layer=6))` works after
  `import idspam` (PEFT 0.21: `PEFT_MINOR`).
- `wrap(model, "idspam", layer=6, **options)`: the same, by method name.
- `load_adapter(folder)`: a `Predictor` (`.predict(texts)`, `.logits(texts)`, `.generate(texts)`) for an
  adapter written by `idspam-run` (any format idspam wrote) or a PEFT sequence-classification adapter.
- `push_adapter(folder, repo_id)`: upload a run's adapter folder with its model card to the hub (`idspam-push`).

`import idspam` is light (no torch, no transformers): each name loads its module on first use. It registers
the idspam methods with PEFT as soon as PEFT is imported (a post-import hook; at once if PEFT already is),
so `PeftModel.from_pretrained` reads their folders whichever of the two is imported first. A registration
failure (another PEFT minor version) is reported as a warning when PEFT is imported, and raised as one line
when an idspam PEFT name is used.
"""

__version__ = "0.1.0"

_PEFT_NAMES = {"IDSPAMConfig", "IDSPAMMeanPoolConfig", "LPTConfig", "LayerPromptTuningConfig", "LayerPTuningConfig",
               "PromptInjectionConfig", "PromptInjectionModel", "PEFT_MINOR"}
_API_NAMES = {"wrap", "load_adapter", "Predictor"}
_HUB_NAMES = {"push_adapter"}

__all__ = sorted(_PEFT_NAMES | _API_NAMES | _HUB_NAMES | {"__version__"})


def _register_with_peft(_peft_module) -> None:
    """The post-import hook on `peft`: register the idspam types; a failure is reported, not swallowed."""
    import warnings

    from . import tuner

    try:
        tuner.register()
    except Exception as e:  # noqa: BLE001 - reported here, raised again when an idspam PEFT name is used
        warnings.warn(f"idspam: the PEFT methods are not registered: {e}", stacklevel=2)


def __getattr__(name: str):
    if name in _PEFT_NAMES:
        from . import tuner

        return getattr(tuner, name)
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    if name in _HUB_NAMES:
        from . import publish

        return getattr(publish, name)
    raise AttributeError(f"module 'idspam' has no attribute {name!r}")


def __dir__():
    return __all__


def _install_peft_hook() -> None:
    import wrapt

    wrapt.register_post_import_hook(_register_with_peft, "peft")


_install_peft_hook()

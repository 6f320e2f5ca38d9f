"""Adapters: what a finished run trained, in a folder anyone can load onto the same backbone.

Runs of methods with a PEFT form write a Hugging Face PEFT folder (`FORMAT_PEFT`):

    adapter/adapter_config.json          PEFT's config (peft_type IDSPAM, IDSPAM_LPT, IDSPAM_PROMPT_TUNING,
                                         IDSPAM_PTUNING, or LORA), for the bare backbone (AutoModel)
    adapter/adapter_model.safetensors    PEFT's weights: `PeftModel.from_pretrained(AutoModel..., folder)`
                                         loads them (after `import idspam` for idspam's types)
    adapter/idspam_adapter.json          what PEFT does not keep: the task (label names, template), the run's
                                         head, model, layer, method options, seed, best epoch
    adapter/idspam_head.safetensors      the run's head (`head=cls`: trained; `head=mlm`/`lm`/`generate`: empty)
    adapter/generation_config.json       head=generate: the run's generation settings as HF's GenerationConfig
                                         (also in idspam_adapter.json's `head`, which is what idspam reads)

Other methods (SMoP, DEPT, fine-tuning) write the project's own format (`FORMAT`), named as such:
`idspam_adapter.json` + `idspam_adapter.safetensors` (every trained tensor by name). Folders of the
earlier `idspam-adapter/1` format (`adapter_config.json` + `adapter.safetensors`) still load here;
PEFT cannot read them, nor PEFT folders without the idspam files as runs (`read_adapter` says which
it found). Written atomically (a temporary folder renamed into place); read with safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .errors import UserError
from .files import default_mode, package_versions

FORMAT = "idspam-adapter/2"  # the project's own format
FORMAT_PEFT = "idspam-peft/1"  # a PEFT folder plus idspam's files
IDSPAM_CONFIG, IDSPAM_WEIGHTS = "idspam_adapter.json", "idspam_adapter.safetensors"
HEAD_WEIGHTS = "idspam_head.safetensors"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
OLD_FORMAT, OLD_CONFIG, OLD_WEIGHTS = "idspam-adapter/1", "adapter_config.json", "adapter.safetensors"
# where a prompt method's tensors sit in a PeftModel of the bare backbone (idspam.tuner)
PEFT_METHOD_PREFIX = "base_model.model.idspam_injection.idspam_prompt."
LORA_ADAPTER = "default"


def backbone_shape(config) -> dict:
    return {"hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size, "model_type": config.model_type}


def peft_form(run: RunConfig) -> str | None:
    """"prompt" (an idspam PEFT type), "lora" (PEFT's LoRA) or None (the project's format) for a run's method."""
    if run.method.peft_type is not None:
        return "prompt"
    return "lora" if run.method.peft_native else None


def export_adapter(folder: Path, model, run: RunConfig, spec, backbone_config, best: dict | None = None) -> Path:
    form = peft_form(run)
    config = {
        "format": FORMAT_PEFT if form else FORMAT,
        "idspam_version": package_versions()["idspam"],
        "method": asdict(run.method),
        "model": {**asdict(run.model), **backbone_shape(backbone_config)},
        "task": {**asdict(run.task), "label_names": list(spec.label_names) if spec.label_names else None},
        "layer": run.layer,
        "head": asdict(run.head),
        "seed": run.seed,
        "best": best,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.trained_state_dict().items()}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    os.chmod(tmp, default_mode(directory=True))
    try:
        if form is None:
            save_file(state, str(tmp / IDSPAM_WEIGHTS), metadata={"format": FORMAT})
        else:
            head = {k: v for k, v in state.items() if k.startswith("head.")}
            save_file(head, str(tmp / HEAD_WEIGHTS), metadata={"format": FORMAT_PEFT})
            if form == "prompt":
                write_peft_prompt(tmp, run, {k: v for k, v in state.items() if k not in head})
            else:
                model.method.save_adapter(tmp)
            config["peft_type"] = json.loads((tmp / PEFT_CONFIG).read_text())["peft_type"]
        (tmp / IDSPAM_CONFIG).write_text(json.dumps(config, indent=2, default=str))
        generation = getattr(model.head, "generation", None)  # head=generate: its settings, in HF's form too
        if generation is not None:
            from transformers import GenerationConfig

            GenerationConfig(**generation).save_pretrained(str(tmp))
        for path in tmp.rglob("*"):
            os.chmod(path, default_mode(directory=path.is_dir()))
        if folder.exists():  # replace an older export as a whole
            old = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_peft_prompt(folder: Path, run: RunConfig, state: dict[str, torch.Tensor]) -> None:
    """adapter_config.json + adapter_model.safetensors of an idspam prompt method, as PEFT's save_pretrained
    writes them for a PeftModel of the bare backbone."""
    from .tuner import peft_config_for

    stray = sorted(k for k in state if not k.startswith("method."))
    if stray:
        raise RuntimeError(f"method {run.method.name} trained tensors outside the method: {stray[:3]}")
    peft_config = peft_config_for(run.method, run.layer, backbone_mode=run.model.backbone_mode,
                                  prompt_positions=getattr(run.model, "prompt_positions", "before"),
                                  base_model_name_or_path=run.model.name_or_path, revision=run.model.revision,
                                  inference_mode=True)
    peft_config.save_pretrained(str(folder))
    weights = {PEFT_METHOD_PREFIX + k.removeprefix("method."): v for k, v in state.items()}
    save_file(weights, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})


def _lora_name(peft_key: str) -> str:
    """A PEFT LoRA checkpoint key of the bare backbone -> the run model's parameter name."""
    parts = peft_key.removeprefix("base_model.model.").split(".")
    out = []
    for part in parts:
        out.append(part)
        if part.startswith("lora_"):
            out.append(LORA_ADAPTER)
    return "engine.base." + ".".join(out)


def adapter_kind(folder: str | Path) -> str:
    """FORMAT_PEFT, FORMAT or OLD_FORMAT; one line naming what is there otherwise."""
    folder = Path(folder).expanduser()
    where = f"adapter {str(folder)!r}"
    if (folder / IDSPAM_CONFIG).is_file():
        try:
            kind = json.loads((folder / IDSPAM_CONFIG).read_text()).get("format")
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{where}: {IDSPAM_CONFIG} cannot be read: {type(e).__name__}: {e}") from None
        if kind in (FORMAT, FORMAT_PEFT):
            return kind
        raise UserError(f"{where} has format {kind!r}; this version reads {FORMAT_PEFT!r}, {FORMAT!r} and "
                        f"{OLD_FORMAT!r}")
    if (folder / OLD_CONFIG).is_file():
        try:
            config = json.loads((folder / OLD_CONFIG).read_text())
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{where}: {OLD_CONFIG} cannot be read: {type(e).__name__}: {e}") from None
        if config.get("format") == OLD_FORMAT:
            return OLD_FORMAT
        if "peft_type" in config:
            return "peft"
    if not folder.is_dir():
        raise UserError(f"{where} does not exist")
    raise UserError(f"{where}: expected {IDSPAM_CONFIG} (an adapter of a finished idspam-run: PEFT or idspam format), "
                    f"or the {OLD_FORMAT} files {OLD_CONFIG} and {OLD_WEIGHTS}, or a PEFT folder ({PEFT_CONFIG} "
                    f"with a peft_type); found {sorted(p.name for p in folder.iterdir())[:6]}")


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(idspam config, trained tensors named as the run's model names them) of a run's adapter folder, in any of
    the formats idspam writes or wrote."""
    folder = Path(folder).expanduser()
    kind = adapter_kind(folder)
    where = f"adapter {str(folder)!r}"
    if kind == "peft":
        raise UserError(f"{where} is a PEFT adapter without idspam's run files ({IDSPAM_CONFIG}): load it with "
                        "idspam.load_adapter or peft.PeftModel.from_pretrained, not as a run's adapter")
    try:
        if kind == OLD_FORMAT:
            return json.loads((folder / OLD_CONFIG).read_text()), load_file(str(folder / OLD_WEIGHTS))
        config = json.loads((folder / IDSPAM_CONFIG).read_text())
        if kind == FORMAT:
            return config, load_file(str(folder / IDSPAM_WEIGHTS))
        weights = load_file(str(folder / HEAD_WEIGHTS))
        peft_weights = load_file(str(folder / PEFT_WEIGHTS))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or missing file gets one line, not a library traceback
        raise UserError(f"{where} ({kind}) cannot be read: {type(e).__name__}: {e}") from None
    if config.get("peft_type") == "LORA":
        weights.update({_lora_name(k): v for k, v in peft_weights.items()})
    else:
        stray = sorted(k for k in peft_weights if not k.startswith(PEFT_METHOD_PREFIX))
        if stray:
            raise UserError(f"{where}: {PEFT_WEIGHTS} has tensors outside the prompt method: {stray[:3]}")
        weights.update({"method." + k.removeprefix(PEFT_METHOD_PREFIX): v for k, v in peft_weights.items()})
    return config, weights


def check_backbone(adapter_config: dict, backbone_config, where: str) -> None:
    """Refuse a backbone whose shapes differ from the one the adapter was trained on, naming both."""
    trained, here = adapter_config["model"], backbone_shape(backbone_config)
    differ = [k for k in ("model_type", "hidden_size", "num_layers") if trained.get(k) != here[k]]
    if differ:
        def describe(m):
            return ", ".join(f"{k} {m.get(k)}" for k in ("model_type", "hidden_size", "num_layers"))
        raise UserError(f"{where} was trained on {trained.get('name_or_path')!r} ({describe(trained)}); "
                        f"this backbone is {describe(here)}: the shapes do not match")

"""Adapters: what a finished run trained, in a folder anyone can load onto the same backbone.

    adapter/adapter.safetensors   the trained tensors (method, head, LoRA matrices...), by name
    adapter/adapter_config.json   method and its options, backbone (name, revision, shapes), task
                                  (label names, template), layer, head, package version

Written atomically (a temporary folder renamed into place); read with safetensors only.
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
from .results import default_mode, package_versions

WEIGHTS, CONFIG = "adapter.safetensors", "adapter_config.json"
FORMAT = "idspam-adapter/1"


def backbone_shape(config) -> dict:
    return {"hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size, "model_type": config.model_type}


def export_adapter(folder: Path, model, run: RunConfig, spec, backbone_config, best: dict | None = None) -> Path:
    config = {
        "format": FORMAT,
        "idspam_version": package_versions()["idspam"],
        "method": asdict(run.method),
        "model": {**asdict(run.model), **backbone_shape(backbone_config)},
        "task": {**asdict(run.task), "label_names": list(spec.label_names) if spec.label_names else None},
        "layer": run.layer,
        "head": asdict(run.head),
        "seed": run.seed,
        "best": best,
    }
    state = {k: v.contiguous() for k, v in model.trained_state_dict().items()}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    os.chmod(tmp, default_mode(directory=True))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str))
        for name in (WEIGHTS, CONFIG):
            os.chmod(tmp / name, default_mode())
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


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    folder = Path(folder).expanduser()
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"adapter={str(folder)!r}: expected {CONFIG} and {WEIGHTS} there (the adapter/ folder of a "
                        "finished idspam.run)")
    try:
        config = json.loads((folder / CONFIG).read_text())
        weights = load_file(str(folder / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - a corrupt file gets one line, not a library traceback
        raise UserError(f"adapter={str(folder)!r} cannot be read: {type(e).__name__}: {e}") from None
    if config.get("format") != FORMAT:
        raise UserError(f"adapter={str(folder)!r} has format {config.get('format')!r}; this version reads {FORMAT!r}")
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

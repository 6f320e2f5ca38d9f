"""Adapters: what a finished run trained, in a folder anyone can load onto the same backbone.

Runs of methods with a PEFT form write a Hugging Face PEFT folder (`FORMAT_PEFT`):

    adapter/adapter_config.json          PEFT's config (peft_type IDSPAM, IDSPAM_LPT, IDSPAM_PROMPT_TUNING,
                                         IDSPAM_PTUNING, or LORA); head=cls: task_type SEQ_CLS and the run's head
    adapter/adapter_model.safetensors    PEFT's weights (with the head as the classifier's modules_to_save):
                                         `AutoPeftModelForSequenceClassification.from_pretrained(folder)` gives
                                         the run's logits (after `import idspam` for idspam's types; LoRA where
                                         PEFT can hold the head, see `lora_head_mapping`)
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
                write_peft_prompt(tmp, run, {k: v for k, v in state.items() if k not in head}, head,
                                  backbone_config)
            else:
                model.method.save_adapter(tmp)
                write_lora_head(tmp, run, head, backbone_config)
            peft_config = json.loads((tmp / PEFT_CONFIG).read_text())
            peft_config["base_model_name_or_path"] = portable_base(run.model.name_or_path)
            (tmp / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2))
            config["peft_type"] = peft_config["peft_type"]
        (tmp / "README.md").write_text(model_card(config, run, best, peft_usage(config, run, backbone_config)))
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


# a packaged model's name on the Hugging Face hub: what another machine can resolve (the packaged folder's path
# is this machine's venv); offline, pass the base model yourself (see the model card's "How to load")
HUB_NAMES = {"packaged:all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def portable_base(name_or_path: str) -> str:
    """The base model's name for adapter_config.json: a packaged model's hub name, else the run's own value."""
    if name_or_path in HUB_NAMES:
        return HUB_NAMES[name_or_path]
    try:
        from .backbone import resolve_path

        here = Path(name_or_path).expanduser().resolve()
        for packaged, hub in HUB_NAMES.items():
            if here == Path(resolve_path(packaged)).resolve():
                return hub
    except Exception:  # noqa: BLE001 - the package is absent: nothing to map
        pass
    return name_or_path


def peft_usage(config: dict, run: RunConfig, backbone_config) -> str:
    """The model card's "With PEFT" section: how PEFT's own classes load this folder, or why they cannot."""
    base = portable_base(run.model.name_or_path)
    peft = config.get("peft_type")
    if peft is None:
        return (f"\nPEFT cannot load this folder: `{run.method.name}` has no PEFT form (it is idspam's own format, "
                "`idspam_adapter.safetensors`); load it with idspam as above.\n")
    need = "import idspam  # registers idspam's PEFT types: PEFT cannot resolve peft_type " + peft + " without it\n"
    if peft == "LORA":
        need = ""
        refusal = lora_head_mapping(run, backbone_config)
        if run.head.type != "cls":
            refusal = ("LoRA is PEFT's own method; this folder is its LoRA of the bare backbone (task_type null: "
                       f"PEFT's auto classes would put it on a *ForCausalLM/*ForMaskedLM model, whose keys differ), "
                       f"so load it on AutoModel; head={run.head.type} is read through idspam (above).")
        if refusal:
            return f"""
With PEFT alone: {refusal}

```python
import peft, transformers
model = peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained("{base}"), "<this folder>")
```
"""
    kind = {"SEQ_CLS": "SequenceClassification", "CAUSAL_LM": "CausalLM"}.get(task_type_for(run) or "")
    if kind is None:  # head=mlm: PEFT has no masked-LM task type
        return f"""
With PEFT, on the bare backbone (its final hidden states; the run's verbalizer over the masked-LM head is idspam's):

```python
{need}import peft, transformers
model = peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained("{base}"), "<this folder>")
```
"""
    what = ("the logits are the run's (its trained head is the classifier)" if kind == "SequenceClassification"
            else "the causal-LM logits and `generate` with the run's prompt")
    return f"""
With PEFT's own classes ({what}):

```python
{need}from peft import AutoPeftModelFor{kind}, PeftModel
from transformers import AutoModelFor{kind}
model = AutoPeftModelFor{kind}.from_pretrained("<this folder>")          # loads the base model "{base}"
# or, with the base model in hand (e.g. a local copy offline):
model = PeftModel.from_pretrained(AutoModelFor{kind}.from_pretrained("{base}"), "<this folder>")
```
"""


def model_card(config: dict, run: RunConfig, best: dict | None, usage: str = "") -> str:
    """The adapter folder's README.md: what was trained (method, layer, task, base model), its best-epoch
    metrics, and how to load it."""
    base = portable_base(run.model.name_or_path)
    metrics = (best or {}).get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
    peft = config.get("peft_type")
    labels = ", ".join(config["task"].get("label_names") or []) or "none (regression or text)"
    return f"""---
library_name: {"peft" if peft else "idspam"}
base_model: {base}
tags: [idspam, {run.method.name}, {run.task.name}]
---

# {run.method.name} adapter for {base} on {run.task.name}

Trained by idspam `idspam-run` (format `{config["format"]}`{f", PEFT type `{peft}`" if peft else ""}):
method `{run.method.name}` injected before layer {run.layer}, head `{run.head.type}`, seed {run.seed},
task `{run.task.name}` (labels: {labels}).

## Metrics (validation, best epoch {(best or {}).get("epoch")})

| metric | value |
|---|---|
{rows or "| (none recorded) | |"}

## How to load

```python
import idspam
predictor = idspam.load_adapter("<this folder>")      # the backbone, the method and the trained head
predictor.predict(["a warm, funny film"])
```

or `idspam-predict <this folder> --input inputs.csv`. The base model is `{base}` (offline: a local copy of it).
{usage}"""


def head_module(backbone_config) -> str:
    """The name of a `*ForSequenceClassification` model's classifier: `score` on decoders, else `classifier`."""
    from .backbone import is_decoder

    return "score" if is_decoder(backbone_config) else "classifier"


def task_type_for(run: RunConfig) -> str | None:
    """PEFT's task type of a run's adapter: SEQ_CLS for a trained head, CAUSAL_LM for a decoder's LM heads
    (head=lm reads label words' next-token logits, head=generate generates), None for head=mlm (PEFT has no
    masked-LM task type: load it with idspam)."""
    return {"cls": "SEQ_CLS", "lm": "CAUSAL_LM", "generate": "CAUSAL_LM"}.get(run.head.type)


def write_peft_prompt(folder: Path, run: RunConfig, state: dict[str, torch.Tensor], head: dict[str, torch.Tensor],
                      backbone_config) -> None:
    """adapter_config.json + adapter_model.safetensors of an idspam prompt method, as PEFT's save_pretrained
    writes them. With head=cls the config carries the run's head (task_type SEQ_CLS) and the weights hold it as
    the classifier's modules_to_save, so `AutoPeftModelForSequenceClassification` gives the run's logits; the
    prompt's keys load onto a `*ForSequenceClassification` model or the bare backbone alike (the tuner moves them
    to where its layer sits)."""
    from .backbone import is_decoder
    from .tuner import peft_config_for

    stray = sorted(k for k in state if not k.startswith("method."))
    if stray:
        raise RuntimeError(f"method {run.method.name} trained tensors outside the method: {stray[:3]}")
    extra = {}
    weights = {PEFT_METHOD_PREFIX + k.removeprefix("method."): v for k, v in state.items()}
    if run.head.type == "cls":
        module = head_module(backbone_config)
        extra["head"] = {"module": module, "num_labels": int(head["head.net." + str(len(head_layers(run)) - 1)
                                                                 + ".weight"].shape[0]),
                         "dropout": run.head.dropout, "dense": run.head.dense,
                         "read_at": "last" if is_decoder(backbone_config) else "first"}
        extra["modules_to_save"] = [module]
        weights.update({f"base_model.model.{module}." + k.removeprefix("head."): v for k, v in head.items()})
    peft_config = peft_config_for(run.method, run.layer, backbone_mode=run.model.backbone_mode,
                                  prompt_positions=getattr(run.model, "prompt_positions", "before"),
                                  base_model_name_or_path=run.model.name_or_path, revision=run.model.revision,
                                  inference_mode=True, task_type=task_type_for(run), **extra)
    peft_config.save_pretrained(str(folder))
    save_file(weights, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})


def head_layers(run: RunConfig) -> list[str]:
    """The layers of a head=cls head's `net` (idspam.heads.ClassificationHead), in order."""
    return ["dropout", "dense", "tanh", "dropout", "linear"] if run.head.dense else ["dropout", "linear"]


# model types whose *ForSequenceClassification classifier is RobertaClassificationHead (dropout, dense, tanh,
# dropout, out_proj on the first token): a head=cls head with dense=true is exactly it; their backbone attribute
ROBERTA_HEADS = {"roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta"}
LORA_HEAD_REFUSAL = ("LoRA is PEFT's own method, which cannot change the model's classification path; the run's "
                     "head=cls is {what}, which {model_type}'s *ForSequenceClassification classifier is not{why}, so "
                     "this adapter is not given a SEQ_CLS task type: load it with idspam (above) for the run's "
                     "predictions, or with PeftModel.from_pretrained on the bare backbone for its hidden states.")


def lora_head_mapping(run: RunConfig, backbone_config) -> str | None:
    """None where a LoRA run's head is exactly its base's *ForSequenceClassification classifier (RoBERTa's
    classification head, head.dense=true) or there is no trained head; else the one-line reason it is not."""
    from .backbone import is_decoder

    model_type = backbone_config.model_type
    if run.head.type != "cls" or (model_type in ROBERTA_HEADS and run.head.dense):
        return None
    what = "dropout, dense, tanh, dropout, linear" if run.head.dense else "dropout and a linear layer"
    what += " on the " + ("last real" if is_decoder(backbone_config) else "first") + " token"
    why = (" (head.dense=true maps exactly)" if model_type in ROBERTA_HEADS else
           " (it reads the pretrained pooler, dense + tanh)" if model_type == "bert" else "")
    return LORA_HEAD_REFUSAL.format(what=what, model_type=model_type, why=why)


def write_lora_head(folder: Path, run: RunConfig, head: dict[str, torch.Tensor], backbone_config) -> None:
    """A LoRA run's adapter as a plain PEFT SEQ_CLS LoRA adapter where PEFT can hold its head: the LoRA keys
    under the `*ForSequenceClassification` model's backbone attribute, the head as the classifier's
    modules_to_save (RoBERTa's classification head). Elsewhere the folder stays PEFT's LoRA of the bare backbone
    (task_type null), and the model card says why."""
    if run.head.type != "cls" or lora_head_mapping(run, backbone_config) is not None:
        return
    attribute = ROBERTA_HEADS[backbone_config.model_type]
    config = json.loads((folder / PEFT_CONFIG).read_text())
    config.update(task_type="SEQ_CLS", modules_to_save=["classifier"])
    (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
    weights = {"base_model.model." + attribute + "." + k.removeprefix("base_model.model."): v
               for k, v in load_file(str(folder / PEFT_WEIGHTS)).items()}
    names = {"net.1.": "classifier.dense.", "net.4.": "classifier.out_proj."}
    for key, value in head.items():
        rest = key.removeprefix("head.")
        for ours, theirs in names.items():
            if rest.startswith(ours):
                weights["base_model.model." + theirs + rest.removeprefix(ours)] = value
    save_file(weights, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})


def _lora_name(peft_key: str, attribute: str | None = None) -> str:
    """A PEFT LoRA checkpoint key of the bare backbone (or, with `attribute`, of a *ForSequenceClassification
    model whose backbone is that attribute) -> the run model's parameter name."""
    key = peft_key.removeprefix("base_model.model.")
    if attribute:
        key = key.removeprefix(attribute + ".")
    parts = key.split(".")
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
        attribute = ROBERTA_HEADS.get(config["model"].get("model_type"))
        seq_cls = any(k.startswith(f"base_model.model.{attribute}.") for k in peft_weights) if attribute else False
        weights.update({_lora_name(k, attribute if seq_cls else None): v for k, v in peft_weights.items()
                        if not k.startswith("base_model.model.classifier.")})  # the head: idspam_head.safetensors
    else:
        peft_weights = {k: v for k, v in peft_weights.items()  # a head=cls head is also in idspam_head.safetensors
                        if not k.startswith(("base_model.model.classifier.", "base_model.model.score."))}
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

"""Predict with a trained adapter:

    python -m idspam.predict adapter=<run dir>/adapter input=dev.tsv output=predictions.jsonl
    cat inputs.jsonl | python -m idspam.predict adapter=<dir> > predictions.jsonl

The input is in the task's own layout (its text columns, e.g. `sentence` for SST-2; `.tsv`,
`.csv` or `.jsonl`; `-` or no `input=` reads stdin). One prediction per input row, in order: the
label name and every class probability (`.jsonl`, or `.tsv`/`.csv` with one column per class;
a regression task writes the predicted value). Options: `batch_size=64`.
When the input has labels, the accuracy is printed to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .adapter import check_backbone, read_adapter
from .backbone import load_backbone, load_config, load_tokenizer
from .config import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, RunConfig, TaskConfig, typed
from .data import Collate, Tokenize
from .errors import UserError
from .methods import method_config
from .model import build_model
from .results import atomic_write_text
from .tasks import get_spec, mlm_verbalizer, read_inputs

USAGE = "usage: python -m idspam.predict adapter=<folder> [input=<file>|-] [output=<file>|-] [batch_size=64]"
OPTIONS = ("adapter", "input", "output", "batch_size")


def parse_args(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise UserError(f"unknown argument {arg!r}; valid: {', '.join(k + '=' for k in OPTIONS)}. {USAGE}")
        args[key] = value
    if "adapter" not in args:
        raise UserError(f"adapter= is required. {USAGE}")
    return args


def input_path(value: str | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A file to read; stdin is saved to a temporary .jsonl or .tsv file (by its first character)."""
    if value and value != "-":
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"input file {value!r} does not exist")
        return path, None
    text = sys.stdin.read()
    holder = tempfile.TemporaryDirectory()
    path = Path(holder.name) / ("stdin.jsonl" if text.lstrip().startswith("{") else "stdin.tsv")
    path.write_text(text)
    return path, holder


def load(adapter: str):
    """(run config, task spec, backbone config, trained tensors) of an adapter folder; no weights loaded yet."""
    config, weights = read_adapter(adapter)
    shape_keys = ("hidden_size", "num_layers", "vocab_size", "model_type")
    model_cfg = typed({k: v for k, v in config["model"].items() if k not in shape_keys}, ModelConfig, "adapter model")
    run = RunConfig(
        task=typed(config["task"], TaskConfig, "adapter task"), model=model_cfg,
        method=method_config(config["method"]), head=typed(config["head"], HeadConfig, "adapter head"),
        optimizer=OptimizerConfig(), data=DataConfig(), layer=int(config["layer"]), seed=int(config["seed"]),
        data_dir=None, cache_dir="", output_dir=".",
    )
    spec = get_spec(run.task)
    backbone_config = load_config(run.model)
    check_backbone(config, backbone_config, f"adapter {adapter!r}")
    return run, spec, backbone_config, weights


def predict(args: dict[str, str]) -> tuple[list[dict], tuple[str, ...] | None]:
    """One output record per input row, and the task's label names."""
    run, spec, backbone_config, weights = load(args["adapter"])
    path, holder = input_path(args.get("input"))
    try:
        texts, labels = read_inputs(spec, path)
    finally:
        if holder:
            holder.cleanup()
    batch_size = int(args.get("batch_size", 64))

    tokenizer = load_tokenizer(run.model, backbone_config)
    torch.manual_seed(run.seed)  # a random-weight backbone is rebuilt exactly as in training
    backbone = load_backbone(run.model, backbone_config, with_mlm_head=run.head.type == "mlm")
    model = build_model(run, spec, backbone, tokenizer)
    model.load_trained_state(weights, f"adapter {args['adapter']!r}")
    model.eval()

    template = mlm_verbalizer(spec, run.task)[0] if run.head.type == "mlm" else None
    encoded = Tokenize(tokenizer, run.task.max_length, template, backbone_config.type_vocab_size > 1)(texts)
    examples = [{**{k: v[i] for k, v in encoded.items()}, "labels": 0} for i in range(len(texts))]
    collate = Collate(tokenizer.pad_token_id or 0, spec.is_regression)

    outputs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(examples), batch_size), desc="predict", unit="batch", file=sys.stderr,
                          disable=len(examples) <= batch_size):
            logits = model(collate(examples[start:start + batch_size])).float()
            if spec.is_regression:
                outputs += [{"prediction": float(v)} for v in logits.squeeze(-1)]
                continue
            for row in logits.softmax(-1):
                outputs.append({"prediction": spec.label_names[int(row.argmax())],
                                "probabilities": dict(zip(spec.label_names, map(float, row), strict=True))})
    outputs = [{"index": i, **out} for i, out in enumerate(outputs)]
    if labels is not None:
        for out, label in zip(outputs, labels, strict=True):
            out["label"] = label if spec.is_regression else spec.label_names[label]
    if labels is not None and not spec.is_regression:
        correct = sum(o["prediction"] == o["label"] for o in outputs)
        print(f"accuracy {correct / len(outputs):.4f} on {len(outputs)} labelled inputs", file=sys.stderr)
    return outputs, spec.label_names


def render(outputs: list[dict], suffix: str, label_names) -> str:
    if suffix not in (".tsv", ".csv"):
        return "".join(json.dumps(o) + "\n" for o in outputs)
    names = list(label_names or [])
    header = ["index", "prediction", *[f"p_{n}" for n in names]] + (["label"] if outputs and "label" in outputs[0] else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
    writer.writerow(header)
    for o in outputs:
        probs = [o["probabilities"][n] for n in names] if names else []
        writer.writerow([o["index"], o["prediction"], *probs] + ([o["label"]] if "label" in o else []))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        outputs, labels = predict(args)
        target = args.get("output", "-")
        text = render(outputs, Path(target).suffix.lower() if target != "-" else ".jsonl", labels)
        if target == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(Path(target).expanduser(), text)
            print(f"wrote {len(outputs)} predictions to {target}", file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

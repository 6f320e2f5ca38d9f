"""Predict with a trained adapter; one JSON line per input row, in order.

    idspam-predict outputs/runs/<...>/adapter --input dev.csv --output predictions.jsonl
    cat inputs.jsonl | idspam-predict <adapter folder> > predictions.jsonl

The adapter is any folder idspam wrote (an `idspam-run` adapter in PEFT format, in idspam's own format, or
in the earlier idspam-adapter/1 format) or a PEFT sequence-classification adapter saved with
`save_pretrained` (then `--text-column` names the input's text columns). The input is in the task's own
layout (its text columns, e.g. `sentence` for SST-2), as CSV, TSV or JSONL, or on stdin. Each output line
holds `index`, `prediction` (the label name; the value for a regression task), `probabilities` (one per
class) and, when the input has labels, the gold `label`; the accuracy then goes to stderr.

An adapter trained with `head=generate` generates instead, with the generation settings saved in it
(`--max-new-tokens` overrides theirs): `prediction` is the generated text; with targets in the input (a
`task=csv_text` file's target column, or a classification task's labels, read as their label words) each
line holds the `target` and the exact match goes to stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError
from ..files import atomic_write_text


def build_parser():
    from .cli import ArgumentParser, positive_int

    parser = ArgumentParser(prog="idspam-predict", description=__doc__.split("\n\n")[0],
                            epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("adapter", help="adapter folder (e.g. <run dir>/adapter)")
    parser.add_argument("--input", default="-", help="CSV, TSV or JSONL file of inputs; - (the default): stdin")
    parser.add_argument("--output", default="-", help="JSONL file to write; - (the default): stdout")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="inputs per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1...")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="head=generate adapters: tokens to generate at most (default: the adapter's setting)")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="a PEFT adapter's class names, in order (default: its base model's id2label)")
    parser.add_argument("--text-column", dest="text_columns", action="append", metavar="NAME",
                        help="the input's text column (repeat for pairs, in the task's order; default: the task's own "
                             "columns, for a PEFT adapter: sentence)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the base model's own Python code run (a Hugging Face auto_map); never taken from "
                             "the adapter's files")
    return parser


def input_path(value: str | None, columns: tuple = ()) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A file to read; stdin is saved to a temporary file: JSONL (its first character is `{`), a TSV whose header
    names the task's text `columns`, or else plain text, one input per line (a tab splits a pair task's texts)."""
    if value and value != "-":
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"input file {value!r} does not exist")
        return path, None
    text = sys.stdin.read()
    holder = tempfile.TemporaryDirectory()
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    header = lines[0].split("\t") if lines else []
    named = columns and all(isinstance(c, str) for c in columns)
    if text.lstrip().startswith("{"):
        path = Path(holder.name) / "stdin.jsonl"
    elif named and not set(columns) <= set(header):  # plain text: one input per line, no header
        path = Path(holder.name) / "stdin.jsonl"
        rows = []
        for line in lines:
            parts = line.split("\t") if len(columns) > 1 else [line]
            rows.append(json.dumps(dict(zip(columns, parts, strict=False))))
        text = "".join(r + "\n" for r in rows)
    else:
        path = Path(holder.name) / "stdin.tsv"
    path.write_text(text)
    return path, holder


def task_spec(predictor, text_columns: list[str] | None):
    """The task whose file layout the input has: the run's task, or (a PEFT adapter) the named text columns."""
    from ..tasks import TaskSpec, get_spec

    if "task" in predictor.config:
        from dataclasses import replace

        from ..api import run_config

        spec = get_spec(run_config(predictor.config).task)
        if text_columns and not spec.text_to_text:  # the input's own column names for the task's texts
            if len(text_columns) != len(spec.local_text):
                raise UserError(f"--text-column given {len(text_columns)} time(s); task {spec.name!r} reads "
                                f"{len(spec.local_text)} text column(s) ({', '.join(map(str, spec.local_text))})")
            spec = replace(spec, local_text=tuple(text_columns))
        return spec
    return TaskSpec(name="input", label_names=predictor.label_names, metric="accuracy",
                    local_text=tuple(text_columns or ("sentence",)), local_label="label")


def predict(adapter: str, input_: str = "-", batch_size: int = 64, device: str = "cpu",
            text_columns: list[str] | None = None, labels: list[str] | None = None,
            max_new_tokens: int | None = None, trust_remote_code: bool = False) -> list[dict]:
    """One output record per input row (see the module's doc)."""
    from ..api import load_adapter
    from ..tasks import read_inputs

    predictor = load_adapter(adapter, device, labels, trust_remote_code=trust_remote_code)
    spec = task_spec(predictor, text_columns)
    path, holder = input_path(input_, spec.local_text)
    try:
        texts, labels = read_inputs(spec, path)
    finally:
        if holder:
            holder.cleanup()
    if getattr(getattr(predictor.model, "head", None), "generative", False):
        return generated(predictor, spec, texts, labels, batch_size, max_new_tokens)
    outputs = []
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", file=sys.stderr,
                      disable=len(texts) <= batch_size):
        outputs += predictor.predict(texts[start:start + batch_size], batch_size)
    outputs = [{"index": i, **out} for i, out in enumerate(outputs)]
    if labels is not None:
        for out, label in zip(outputs, labels, strict=True):
            out["label"] = label if predictor.regression else predictor.label_names[label]
        if not predictor.regression:
            correct = sum(o["prediction"] == o["label"] for o in outputs)
            print(f"accuracy {correct / len(outputs):.4f} on {len(outputs)} labelled inputs", file=sys.stderr)
    return outputs


def generated(predictor, spec, texts, targets, batch_size: int, max_new_tokens: int | None) -> list[dict]:
    """head=generate adapters: one record per input with the generated text (and the target, when known)."""
    from ..api import run_config
    from ..runner.metrics import normalize_text
    from ..tasks import mlm_verbalizer

    overrides = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    outputs = []
    for start in tqdm(range(0, len(texts), batch_size), desc="generate", unit="batch", file=sys.stderr,
                      disable=len(texts) <= batch_size):
        outputs += predictor.generate(texts[start:start + batch_size], batch_size, **overrides)
    outputs = [{"index": i, "prediction": text} for i, text in enumerate(outputs)]
    if targets is not None:
        if not spec.text_to_text:  # a classification task: its label words are the targets
            words = mlm_verbalizer(spec, run_config(predictor.config).task)[1]
            targets = [words[label] for label in targets]
        tok = predictor.tokenize
        for out, target in zip(outputs, targets, strict=True):  # as the tokenizer gives the target back
            out["target"] = tok.tok.decode(tok.encode_target(target)[:-1], skip_special_tokens=True)
        exact = sum(normalize_text(o["prediction"]) == normalize_text(o["target"]) for o in outputs)
        print(f"exact match {exact / len(outputs):.4f} on {len(outputs)} inputs with targets", file=sys.stderr)
    return outputs


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        outputs = predict(args.adapter, args.input, args.batch_size, args.device, args.text_columns, args.labels,
                          args.max_new_tokens, args.trust_remote_code)
        text = "".join(json.dumps(o) + "\n" for o in outputs)
        if args.output == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(Path(args.output).expanduser(), text)
            print(f"wrote {len(outputs)} predictions to {args.output}", file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Trainable parameters per method, as a Markdown table, beside the paper's Table 12.

    idspam-params                                    # roberta_base and roberta_large
    idspam-params --model minilm roberta_base --task mnli --include-head
    idspam-params --model tiny --set head=mlm --set method.dropout=0

Each method is built exactly as a run builds it, on the model's architecture with random weights
on the `meta` device (no download, no memory), and its parameters are counted. `--task`, `--head`
and any `--set KEY=VALUE` (a config override, as the runner takes it) apply to every row.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import UserError
from .paper import TABLE_12, TABLE_13

DEFAULT_MODELS = ("roberta_base", "roberta_large")
GPT2_MODELS = ("gpt2", "gpt2_medium", "gpt2_large", "gpt2_xl")
# Table 13 rows: ID-SPAM with the configuration that reproduces Table 12 on RoBERTa, and LoRA's defaults
TABLE_13_ROWS = (
    ("idspam", ("method.prompt_length=11", "method.bottleneck=32", "method.mlp_bias=false")),
    ("lora", ()),
)


@dataclass(frozen=True)
class Row:
    method: str
    overrides: tuple[str, ...] = ()
    note: str = ""
    compare: bool = True  # show the paper's count of this method beside this row


ROWS = (
    Row("idspam", note="defaults (t=10, c=128)"),
    Row("idspam", ("method.prompt_length=11", "method.bottleneck=32", "method.mlp_bias=false"),
        "the configuration that reproduces Table 12"),
    Row("idspam_meanpool", note="ablation: no attention"),
    Row("prompt_tuning"),
    Row("ptuning"),
    Row("lpt", note="official code (biases)"),
    Row("lpt", ("method.bias=false",), "reproduces Table 12"),
    Row("lpt", ("method.static=true",), "static late prompt", compare=False),
    Row("smop"),
    Row("dept"),
    Row("lora", note="r=8 on query, value"),
    Row("finetune"),
)


def count(overrides: list[str]) -> tuple[int, int]:
    """(method parameters, head parameters) of the run the overrides describe."""
    counts = count_all(overrides)
    return counts["method"], counts["head"]


def count_all(overrides: list[str]) -> dict:
    """`PromptModel.parameter_counts()` of the run the overrides describe (counted on the meta device)."""
    from ..config import HeadConfig, ModelConfig, TaskConfig, typed
    from ..methods import method_config
    from ..model import count_on_meta
    from ..runner.compose import compose
    from ..tasks import get_spec

    cfg = compose(overrides)
    return count_on_meta(typed(cfg.model, ModelConfig, "model"), method_config(cfg.method),
                         typed(cfg.head, HeadConfig, "head"), get_spec(typed(cfg.task, TaskConfig, "task")))


def table(models: list[str], extra: list[str], include_head: bool = False) -> str:
    header = ["method", "settings"]
    for name in models:
        header += [f"{name} (ours)", f"{name} (paper)"]
    header += ["head in ours", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        cells = [row.method, " ".join(o.removeprefix("method.") for o in row.overrides) or "defaults"]
        heads = []
        for name in models:
            method, head = count([f"model={name}", f"method={row.method}", *row.overrides, *extra])
            ours = method + head if include_head else method
            paper = TABLE_12.get((name, row.method)) if row.compare else None
            mark = " (equal)" if paper == ours else ""
            cells += [f"{ours:,}", f"{paper:,}{mark}" if paper else ""]
            heads.append(f"{head:,}")
        cells += [f"{'yes' if include_head else 'no'} (head: {' / '.join(heads)})", row.note]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Paper: Table 12 of the ID-SPAM paper; its counts include no classification head. "
                 "No LoRA configuration we searched (any rank, on any subset of the query, key, value, "
                 "attention-output and feed-forward projections, with no head, a linear head or RoBERTa's "
                 "dense head) gives its LoRA counts exactly.")
    return "\n".join(lines)


def table_13(extra: list[str]) -> str:
    """The GPT-2 family beside the paper's Table 13 (millions): backbone, ID-SPAM and LoRA."""
    lines = ["| model | backbone (ours) | backbone (paper) | idspam (ours) | idspam (paper) | lora (ours) | "
             "lora (paper) |", "|" + "---|" * 7]
    for name in GPT2_MODELS:
        cells = [name]
        for k, (method, overrides) in enumerate(TABLE_13_ROWS):
            counts = count_all([f"model={name}", f"method={method}", *overrides, *extra])
            if k == 0:
                cells += [f"{counts['total'] - counts['trainable']:,}", f"{TABLE_13[name][0]}M"]
            cells += [f"{counts['method']:,}", f"{TABLE_13[name][1 + k]}M"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paper: Table 13 of the ID-SPAM paper, in millions. Ours: ID-SPAM with "
              f"{' '.join(o.removeprefix('method.') for o in TABLE_13_ROWS[0][1])} (the configuration that gives "
              "Table 12 exactly on RoBERTa), LoRA r=8 on GPT-2's fused c_attn; no head counted. The backbone is the "
              "bare GPT2Model (the LM head is tied to the word embeddings); the paper's 126.8M for GPT-2 is 2.36M "
              "above it and the paper does not say what it counts. Its ID-SPAM count for gpt2_large is 0.3M below "
              "this configuration's (the other three agree to its rounding). Its LoRA counts are 8x ours: it does "
              "not give the rank or the target modules it used."]
    return "\n".join(lines)


def build_parser():
    from .cli import ArgumentParser

    parser = ArgumentParser(prog="idspam-params", description=__doc__.split("\n\n")[0],
                            epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--model", nargs="+", metavar="NAME",
                        help=f"model configs (conf/model), one column pair each (default: {' '.join(DEFAULT_MODELS)}, "
                             "then the GPT-2 family beside Table 13)")
    parser.add_argument("--task", help="task config, for the head's number of classes (default: the config's)")
    parser.add_argument("--head", choices=("cls", "mlm"), help="head config (default: the config's)")
    parser.add_argument("--include-head", action="store_true", help="count the head's parameters in ours "
                                                                   "(the paper's counts include none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to every row (repeatable), e.g. --set method.bias=false")
    return parser


def main(argv: list[str] | None = None) -> None:
    from ..runner.compose import check_group_choices

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    models = [m for name in (args.model or DEFAULT_MODELS) for m in name.split(",") if m]
    extra = [f"task={args.task}"] * bool(args.task) + [f"head={args.head}"] * bool(args.head)
    try:
        for override in args.overrides:
            key, eq, _ = override.partition("=")
            if not eq:
                raise UserError(f"--set {override!r}: expected KEY=VALUE")
            if key.lstrip("+~") in ("method", "layer", "model"):
                hint = "use --model" if key.lstrip("+~") == "model" else "it counts every method"
                raise UserError(f"--set {key}=... is not an option of idspam-params: {hint}")
            extra.append(override)
        check_group_choices([f"model={','.join(models)}", *extra])
        print(table(models, extra, args.include_head))
        if args.model is None:  # no --model: the paper's two tables
            print("\n" + table_13(extra))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

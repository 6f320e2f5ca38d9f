"""Training speed and memory of every method against Hugging Face PEFT, in one process.

    idspam-bench                                   # roberta_base shapes, batch 16, length 128, CPU
    idspam-bench --model roberta_large --device cuda --precision bf16 --out bench.json

Each row is a full training step (forward, backward, AdamW step) on a random batch, except
`inference`, the frozen backbone's forward (the lower bound on cost). Rows are timed interleaved,
after warm-up, and the median over `repeats` is reported as examples per second, with its ratio
to PEFT's prompt tuning and to inference. Peak memory is the growth above the loaded model during
its first training steps, in a fresh subprocess per row (`--memory inline` measures in this process,
after the timing): on CPU the peak RSS (sampled every millisecond), on GPU
`torch.cuda.max_memory_allocated`. The backbone is built from its config with random weights: no
download, and the same compute as the real model. `--quick` runs a tiny model for the tests.
Rows named `pruned` compute the last layer only at the position the head reads
(`model.prune_last_layer`, what runs do by default); the other rows of ours compute it everywhere.
Decoders (`--model gpt2`, `--model llama_small`) get the same rows, PEFT's against
`*ForSequenceClassification` on the same backbone.
"""

from __future__ import annotations

import argparse
import sys

from ...errors import UserError

DEFAULTS = {"model": "roberta_base", "batch": 16, "length": 128, "device": "cpu", "precision": "fp32",
            "steps": 3, "repeats": 5, "warmup": 2, "memory": "subprocess", "out": "bench.json",
            "quick": False, "rows": "", "seed": 0}
QUICK = {"model": "tiny", "batch": 4, "length": 16, "steps": 1, "repeats": 2, "warmup": 1, "memory": "inline"}
PRECISION_NAMES = ["fp32", "bf16"]  # common.PRECISIONS maps them to torch dtypes


def build_parser():
    from ..cli import ArgumentParser, positive_int

    parser = ArgumentParser(prog="idspam-bench", description=__doc__.split("\n\n")[0],
                            epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    add = parser.add_argument
    add("--model", help=f"model config (conf/model/<name>.yaml), built with random weights "
                        f"(default {DEFAULTS['model']}; --quick: {QUICK['model']})")
    add("--batch", type=positive_int, help=f"examples per step (default {DEFAULTS['batch']})")
    add("--length", type=positive_int, help=f"tokens per example (default {DEFAULTS['length']})")
    add("--device", help=f"cpu, cuda, cuda:1... (default {DEFAULTS['device']})")
    add("--precision", choices=PRECISION_NAMES, help=f"(default {DEFAULTS['precision']})")
    add("--steps", type=positive_int, help=f"training steps per timed repeat (default {DEFAULTS['steps']})")
    add("--repeats", type=positive_int, help=f"timed repeats; the median is reported (default {DEFAULTS['repeats']})")
    add("--warmup", type=int, help=f"untimed steps per row first (default {DEFAULTS['warmup']}; --memory-rows: "
                                   "1, before the peak is reset)")
    add("--memory", choices=("subprocess", "inline", "off"),
        help=f"peak memory per row in a fresh process, in this one, or not at all (default {DEFAULTS['memory']})")
    add("--out", help=f"JSON file of the results (default {DEFAULTS['out']})")
    add("--quick", action="store_true", help="a tiny model and few steps (what the tests run); "
                                             "options given explicitly still apply")
    add("--rows", help="comma-separated row names to run (inference and peft prompt_tuning always run); "
                       "default: every row")
    add("--seed", type=int, help=f"(default {DEFAULTS['seed']})")
    add("--memory-row", dest="memory_row", help=argparse.SUPPRESS)  # a memory_in_subprocess child
    from .e2e import add_e2e_options

    add_e2e_options(parser)  # --e2e: whole training runs with and without cache_lower (e2e.py)
    add("--decode", action="store_true", default=None,
        help="decode speed instead: tokens/s of generate with the prompt at m = N/2 against PEFT prompt tuning "
             "and no prompt, on a decoder (--model gpt2, llama_small; decode.py)")
    add("--memory-rows", dest="memory_rows", action="store_true", default=None,
        help="peak training memory per row at real shapes, each row in a fresh process (--model qwen2_5_0_5b, "
             "llama_3_2_1b, llama_3_1_8b; rows like 'idspam m=16 nf4 ckpt,peft lora nf4'; memory.py)")
    add("--fits", help="what fits where instead: comma-separated --memory-rows JSON files; weights computed from "
                       "the parameter counts, the measured step costs scaled to --batch x --length (default 8 x 512), "
                       "the largest batch on 24/40/80 GiB (fits.py)")
    add("--row-timeout", dest="row_timeout", type=positive_int, help="--memory-rows: seconds per row (default 3600)")
    add("--memory-child", dest="memory_child", action="store_true", default=None, help=argparse.SUPPRESS)
    add("--new-tokens", dest="new_tokens", type=positive_int, help="--decode: tokens generated per input (default 32)")
    return parser


def parse(argv: list[str]) -> dict:
    """The options as a dict (DEFAULTS' keys; --quick fills what was not given from QUICK)."""
    given = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    quick = given.pop("quick", False)
    args = {**DEFAULTS, **(QUICK if quick else {}), **given, "quick": quick}
    if given.get("fits"):
        args.update(batch=given.get("batch", 8), length=given.get("length", 512))  # the shape
    if given.get("memory_rows") and "warmup" not in given:
        args["warmup"] = 1  # the first step's one-off work stays out of the measured peak (memory.measure_row)
    if args["device"].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args['device']} but no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parse(argv)  # --help and bad options before torch
        from .common import finish

        if "memory_row" in args:  # child process of memory_in_subprocess
            name = args.pop("memory_row")
            from .common import peak_memory_mb
            from .step import build_row, rows_for, setup

            shared = setup(args)
            spec = next(s for s in rows_for(shared["config"].num_hidden_layers) if s[0] == name)
            row = build_row(*spec, args, shared)
            print(peak_memory_mb(row, args))  # from the loaded model: optimizer state, grads, activations
            return
        if args.get("fits"):
            from . import fits

            rows = fits.read_rows([f for f in args["fits"].split(",") if f.strip()])
            results = fits.fits(rows, int(args["batch"]), int(args["length"]))
            keep = {k: args[k] for k in ("fits", "batch", "length", "out")}
            return finish(keep, results, fits.fits_table(results, rows), command=argv)
        if args.pop("memory_rows", None):
            from . import memory

            args = {k: v for k, v in args.items() if k not in ("e2e", "decode")}
            if args.pop("memory_child", None):
                return memory.child(args)
            results = memory.run_rows(args)
            return finish(args, results, memory.memory_table(results, args), command=argv)
        if args.pop("e2e", None):
            from .e2e import main_e2e

            return main_e2e(args)
        if args.pop("decode", None):
            from .decode import decode_rows, decode_table

            args.setdefault("new_tokens", 32)
            results = decode_rows(args)
            text = decode_table(results, args)
            return finish(args, results, text, command=argv)
        from .step import run, table

        results = run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finish(args, results, table(results, args), command=argv)




if __name__ == "__main__":
    main()

"""What every idspam command-line tool shares: an argparse parser whose errors are one line.

`--help` prints the usage with every option and exits 0 (argparse's own behaviour); a parse
error (an unknown option, a missing or malformed value) prints one line naming it and exits 2.
"""

from __future__ import annotations

import argparse
import sys

TOOLS = {
    "run": ("idspam.runner.app", "train and evaluate one configuration, or sweep with -m (Hydra: key=value overrides)"),
    "report": ("idspam.tools.report", "tables (Markdown, CSV, JSON) and layer figures of sweeps, beside the paper"),
    "predict": ("idspam.tools.predict", "predict with a trained adapter (PEFT or idspam format); JSONL out"),
    "bench": ("idspam.tools.bench.main", "training speed and memory of every method against Hugging Face PEFT"),
    "params": ("idspam.tools.params", "trainable parameters per method, beside the paper's Table 12"),
    "protocol": ("idspam.tools.protocol", "the reproduction protocol: tuned learning rates, the claim table with "
                                          "intervals"),
    "cache": ("idspam.tools.cache", "list or remove the on-disk caches (tokenised data, lower-stack caches)"),
    "push": ("idspam.tools.push", "upload a run's adapter folder (PEFT files, model card) to the Hugging Face hub"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a parse error reduced to one line on stderr (and exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # an option is named in full, or it is unknown
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """An unknown option is named first, before a missing argument (`idspam-report --nope`)."""
        args = list(sys.argv[1:] if args is None else args)
        known = {s for action in self._actions for s in action.option_strings}
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("--") and arg.split("=", 1)[0] not in known:
                self.error(f"unrecognized arguments: {arg.split('=', 1)[0]}")
        return super().parse_args(args, namespace)

    def error(self, message: str):  # noqa: D102 - argparse's hook
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def fail(message: str) -> None:
    """A user error of a tool: one line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

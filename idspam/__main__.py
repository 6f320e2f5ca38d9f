"""`python -m idspam`: the command-line tools; `python -m idspam <tool> [options]` runs one."""

from __future__ import annotations

import importlib
import sys

from .tools.cli import TOOLS


def usage() -> str:
    width = max(len(name) for name in TOOLS)
    lines = ["usage: python -m idspam <tool> [options]   (or the console command idspam-<tool>)", "",
             "tools (each takes --help):"]
    lines += [f"  {name:<{width}}  idspam-{name:<{width}}  {text}" for name, (_, text) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in TOOLS:
        print(f"idspam: error: unknown tool {argv[0]!r}; valid: {', '.join(TOOLS)} (see python -m idspam --help)",
              file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(TOOLS[argv[0]][0])
    sys.argv = [f"idspam-{argv[0]}", *argv[1:]]
    if argv[0] == "run":
        module.main()  # Hydra reads sys.argv
    else:
        sys.exit(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    main()

"""Every tool answers --help (and an argument error) before importing torch, transformers, PEFT, Lightning..."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "lightning", "datasets", "matplotlib", "wandb", "pandas", "sklearn",
         "scipy")
BLOCK = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked heavy import: " + name)
sys.meta_path.insert(0, Block())
module, function = sys.argv[1].split(":")
getattr(importlib.import_module(module), function)(sys.argv[2:])
"""
TOOLS = ["idspam.tools.report:main", "idspam.tools.predict:main", "idspam.tools.bench.main:main",
         "idspam.tools.params:main", "idspam.tools.protocol:main", "idspam.tools.cache:main",
         "idspam.tools.push:main", "idspam.__main__:main"]


def run_blocked(entry: str, *args: str):
    return subprocess.run([sys.executable, "-c", BLOCK, entry, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry", TOOLS)
def test_help_before_heavy_imports(entry):
    proc = run_blocked(entry, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout.lower() and "blocked" not in proc.stderr


@pytest.mark.parametrize("entry", [e for e in TOOLS if "__main__" not in e and "cache" not in e])
def test_argument_error_before_heavy_imports(entry):
    proc = run_blocked(entry, "--no-such-option")
    assert proc.returncode == 2 and "blocked" not in proc.stderr, proc.stderr[-2000:]


def test_the_block_bites():
    """The test can fail: a module that imports torch is refused under the block."""
    proc = run_blocked("idspam.tools.bench.common:finish")
    assert proc.returncode != 0 and "blocked heavy import: torch" in proc.stderr

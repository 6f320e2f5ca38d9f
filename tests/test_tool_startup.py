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


NOT_INSTALLED = """
import importlib, sys
absent = set(sys.argv[1].split(","))
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NotInstalled())
module, function = sys.argv[2].split(":")
tool = getattr(importlib.import_module(module), function)
sys.argv = ["tool", *sys.argv[3:]]
tool(*([sys.argv[1:]] if function == "main" and not module.startswith("idspam.runner") else []))
"""


def run_without(modules: str, entry: str, *args: str):
    return subprocess.run([sys.executable, "-c", NOT_INSTALLED, modules, entry, *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args", [["model=tiny"], ["--help"]])
def test_runner_without_its_extra_names_the_extra_in_one_line(args):
    proc = run_without("lightning", "idspam.runner.app:main", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr == 'error: idspam-run needs the [runner] extra (lightning not installed): pip install ' \
                          '"idspam[runner]"\n'


def test_report_without_plot_or_wandb_extras(tmp_path):
    """Without matplotlib the tables are written and the figures skipped with one line; --wandb without wandb is
    one line naming the extra, before any sweep is read."""
    from .test_report import finished, write_sweep

    sweep = tmp_path / "layer_sweep" / "t"
    write_sweep(sweep, {"layer": "range(0,2)"}, [], [
        ([f"layer={layer}"], finished(0.6, method="idspam", task="rte", seed=1, layer=layer, model="roberta_large",
                                      experiment="layer_sweep")) for layer in range(2)])
    proc = run_without("matplotlib", "idspam.tools.report:main", str(sweep))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr == ("note: idspam-report's layer figures needs the [plot] extra (matplotlib not installed): "
                           'pip install "idspam[plot]"; the figures are skipped\n')
    assert (sweep / "report.md").is_file() and not list(sweep.glob("*.png"))
    proc = run_without("wandb", "idspam.tools.report:main", str(tmp_path / "nowhere"), "--wandb")
    assert proc.returncode == 2 and proc.stderr == ('error: idspam-report --wandb needs the [wandb] extra (wandb not '
                                                    'installed): pip install "idspam[wandb]"\n')

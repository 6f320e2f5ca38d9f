"""Every command-line tool: --help prints every option and exits 0, an unknown option is one line and exit 2,
the console scripts exist after `pip install`, and `python -m idspam` lists the tools."""

import argparse
import importlib
import shutil
import subprocess
import sys

import pytest

TOOLS = ["report", "predict", "bench", "params", "protocol"]
POSITIONAL = {"report": ["some/sweep"], "predict": ["some/adapter"], "bench": [], "params": [],
              "protocol": ["some/sweep"]}


def tool_module(tool: str):
    from idspam.tools.cli import TOOLS as TABLE

    return importlib.import_module(TABLE[tool][0])


def options_of(tool: str) -> list[str]:
    parser = tool_module(tool).build_parser()
    return [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings if s.startswith("--")]


@pytest.mark.parametrize("tool", TOOLS)
def test_help_names_every_option_and_exits_0(tool, capsys):
    main = tool_module(tool).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: idspam-{tool}")
    options = options_of(tool)
    assert len(options) >= 3 and all(option in out for option in options)


@pytest.mark.parametrize("tool", TOOLS)
def test_unknown_option_is_one_line_and_exit_2(tool, capsys):
    main = tool_module(tool).main
    with pytest.raises(SystemExit) as e:
        main([*POSITIONAL[tool], "--colour", "red"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == f"idspam-{tool}: error: unrecognized arguments: --colour (see idspam-{tool} --help)\n"


def test_bad_value_is_one_line_too(capsys):
    from idspam.tools.bench.main import main

    with pytest.raises(SystemExit) as e:
        main(["--batch", "zero"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "argument --batch: 'zero' is not an integer" in err


def test_python_m_idspam_lists_the_tools_and_console_scripts_run():
    """The console scripts of pyproject's [project.scripts], as `pip install` (make install) puts them on PATH."""
    listed = subprocess.run([sys.executable, "-m", "idspam", "--help"], capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0
    for tool in ["run", *TOOLS]:
        assert f"idspam-{tool}" in listed.stdout
    commands = {tool: shutil.which(f"idspam-{tool}") for tool in ["run", *TOOLS]}
    missing = [tool for tool, path in commands.items() if path is None]
    assert not missing, f"console scripts not installed: {missing} (run: pip install -e .)"
    procs = {tool: subprocess.Popen([path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tool, path in commands.items()}
    for tool, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (tool, err[-500:])
        assert out.startswith("idspam-run: ") if tool == "run" else out.startswith(f"usage: idspam-{tool}")
    wrong = subprocess.run([sys.executable, "-m", "idspam", "report", "--nope"], capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--nope" in wrong.stderr

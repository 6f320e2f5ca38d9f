"""The project as a user installs it: a wheel built from the checkout, installed in a fresh virtual environment
outside it, runs the default job and a `-m` sweep from an empty folder (the configs ship inside the wheel)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_epochs=1", "task.max_train_samples=32", "task.max_eval_samples=16", "logger=none"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv that sees this machine's packages (torch and the rest: nothing to download) but holds its own
    idspam, installed from the wheel, not the checkout's editable one."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: the build writes its build/ folder there, not into the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "outputs", "multirun", "build", "dist", "site",
                                                               "*.egg-info", "__pycache__", "experiments", "wandb"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work)], check=True, capture_output=True, timeout=600)
    (wheel,) = work.glob("idspam-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], check=True,
                   timeout=300)
    subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    return work / "venv" / "bin"


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_runs_from_an_empty_folder(venv, tmp_path):
    where = subprocess.run([str(venv / "python"), "-c", "import idspam.runner.compose as c, idspam; "
                            "print(idspam.__file__); print(c.conf_dir())"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=True).stdout.split()
    assert all(str(venv.parent) in p and str(ROOT) not in p for p in where), where  # the installed copy
    assert (Path(where[1]) / "config.yaml").is_file() and (Path(where[1]) / "model" / "minilm.yaml").is_file()

    single = subprocess.run([str(venv / "idspam-run"), *FAST], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    (results,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    assert json.loads(results.read_text())["status"] == "finished"

    sweep = subprocess.run([str(venv / "idspam-run"), "-m", "layer=1,2", *FAST], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "sweep summary: 2 of 2 jobs finished" in sweep.stdout
    layers = sorted(json.loads(p.read_text())["layer"]
                    for p in (tmp_path / "outputs" / "multiruns").rglob("results.json"))
    assert layers == [1, 2]

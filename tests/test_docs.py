"""The documentation: the site builds with warnings as errors (a dead link or anchor fails), every name the API
reference lists has a docstring, and the README is a front page whose links lead somewhere."""

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "InjectionEngine" in reference and "load_adapter" in reference


def reference_members() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "reference.md").read_text()
    out = []
    for module, members in re.findall(r"::: (\S+)\n(?:    options:\n      members: \[([^\]]*)\])?", text):
        names = [m.strip() for m in members.split(",")] if members else []
        out += [(module, name) for name in names] or [(module, "")]
    return out


def test_every_name_of_the_api_reference_has_a_docstring():
    missing = []
    for module, name in reference_members():
        obj = importlib.import_module(module)
        obj = getattr(obj, name) if name else obj
        if not (getattr(obj, "__doc__", None) or "").strip():
            missing.append(f"{module}.{name}")
    assert reference_members() and not missing, missing


def test_the_readme_is_a_front_page_and_its_links_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links and not [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= {Path(link).name for link in links} | {"index.md"}  # every page is reachable from the front

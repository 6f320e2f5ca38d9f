"""A clone with no benchmark data beside it (any user's machine): the suite collects, and the tests that read
the data skip with a reason that names the setting (IDSPAM_DATA), they do not fail. CI sets
IDSPAM_REQUIRE_DATA=1, which turns missing data into a failed session."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def clone(tmp_path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    copy = tmp_path / "clone" / "idspam"  # no shared/ beside it
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def pytest_in(copy, *args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("IDSPAM_DATA", "IDSPAM_REQUIRE_DATA")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args], cwd=copy,
                          capture_output=True, text=True, timeout=600, env={**base, "OMP_NUM_THREADS": "1", **env})


@pytest.mark.slow  # copies the repository and collects the whole suite (about a minute)
def test_data_tests_skip_with_the_setting_named_on_a_clone_alone(tmp_path):
    copy = clone(tmp_path)
    assert not (copy.parent / "shared").exists()
    collected = pytest_in(copy, "--collect-only", "tests")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    proc = pytest_in(copy, "tests/test_data.py", "tests/test_transfer_tasks.py", "-k",
                     "official_counts or quotes_are_literal or superglue_files")
    out = proc.stdout
    assert proc.returncode == 0 and " passed" not in out.splitlines()[-1] and "failed" not in out, out[-3000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) >= 2 and all("set IDSPAM_DATA to the folder holding glue_data/" in s for s in skips), out
    required = pytest_in(copy, "tests/test_data.py", "-k", "quotes_are_literal", IDSPAM_REQUIRE_DATA="1")
    assert required.returncode != 0 and "IDSPAM_REQUIRE_DATA=1 and benchmark data not found" in (
        required.stdout + required.stderr)

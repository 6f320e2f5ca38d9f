"""Files the project writes: atomically (a crash or a signal never leaves half a file), with the
permissions a plain open() would give; the versions and the commit that wrote them; one timestamp
format; one content digest for cache keys and fingerprints."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

PACKAGES = ("idspam", "torch", "lightning", "transformers", "datasets", "torchmetrics", "hydra-core", "peft", "wandb")


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give (temporary files are created private)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a temporary file in the target's folder, fsync, then rename over the target: a
    reader (or a second writer) sees the old file or the new one, never a mix. On any failure the
    temporary file is removed and the target is left as it was; a full disk is `DiskFull`, one line naming
    the target."""
    from .errors import DiskFull, disk_full, no_space

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if no_space(e):
            raise disk_full(path, e) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, DiskFull) and no_space(e):
            raise disk_full(path, e) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`atomic_write` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def digest(parts) -> str:
    """A short hash of a JSON-able value (key order does not matter): cache keys and fingerprints."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def now_iso() -> str:
    """The one timestamp format of results.json and the run records (local time with its offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the idspam checkout (with '-dirty' for uncommitted changes), if it is one. Cached: the
    first call (the runner makes it before any job starts) names the code this process loaded, so a long
    multirun never reports a later checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None

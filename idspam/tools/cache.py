"""List or remove this project's on-disk caches (lower-stack caches, tokenised data sets).

    python -m idspam cache list                       # every cache: kind, key, size, rows done, last use
    python -m idspam cache clear                      # remove every cache not in use by a running job
    python -m idspam cache clear --older-than 7       # ... only those unused for 7 days
    python -m idspam cache clear --kind lower --key 3f2a...   # one lower-stack cache

The cache directory is `--cache-dir`, else `$IDSPAM_CACHE_DIR`, else `~/.cache/idspam` (the runs'
`cache_dir`). A lower-stack cache that a process has open (it holds the cache's lock) is never
removed; `clear` names it and goes on.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

KINDS = ("lower", "tokenized")


def default_cache_dir() -> Path:
    return Path(os.environ.get("IDSPAM_CACHE_DIR") or "~/.cache/idspam").expanduser()


def folder_bytes(folder: Path) -> int:
    """Bytes on disk (sparse files count what is allocated)."""
    total = 0
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            total += min(st.st_size, st.st_blocks * 512)
    return total


def entries(cache_dir: Path, kinds=KINDS) -> list[dict]:
    out = []
    for kind in kinds:
        root = cache_dir / kind
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                continue
            entry = {"kind": kind, "key": folder.name, "path": str(folder), "bytes": folder_bytes(folder),
                     "last_used": folder.stat().st_mtime, "what": "", "complete": None}
            if folder.name.startswith(".tmp-"):
                entry["what"] = "unfinished (a killed write)"
            if kind == "lower":
                meta = folder / "meta.json"
                if meta.is_file():
                    info = json.loads(meta.read_text())
                    key = info.get("key", {})
                    entry["last_used"] = meta.stat().st_mtime
                    log = folder / "rows.log"
                    done = _journal_rows(log) if log.is_file() else 0
                    entry["complete"] = f"{done}/{info.get('rows')}"
                    entry["what"] = (f"{key.get('task')} {key.get('split', 'train')} "
                                     f"{(key.get('model') or {}).get('name')} "
                                     f"layer {key.get('layer')} "
                                     f"{info.get('dtype')} {'+'.join(info.get('parts', []))}")
                else:
                    entry["what"] = "unfinished (no meta.json)"
            else:
                entry["what"] = folder.name.rsplit("-", 1)[0]
            out.append(entry)
    return out


def _journal_rows(log: Path) -> int:
    import numpy as np

    from ..runner.lower_cache import read_journal

    index, _ = read_journal(log.read_bytes())
    return len(np.unique(index))


def remove(folder: Path, dry_run: bool) -> bool:
    """Remove the folder unless a process holds its lock (a lower cache in use); False if kept."""
    lock = folder / ".lock"
    fd = os.open(lock, os.O_RDWR) if lock.is_file() else None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while removing: no process opens it meanwhile
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        return True
    except BlockingIOError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idspam cache", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("list", "clear"), help="list the caches, or remove them")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="the runs' cache_dir (default: $IDSPAM_CACHE_DIR or ~/.cache/idspam)")
    parser.add_argument("--kind", choices=(*KINDS, "all"), default="all",
                        help="lower (lower-stack caches), tokenized (tokenised data) or all (default)")
    parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                        help="clear: only caches not used for this many days")
    parser.add_argument("--key", default=None,
                        help="clear: only the cache with this key (its folder name, or the start that list prints)")
    parser.add_argument("--dry-run", action="store_true", help="clear: name what would be removed, remove nothing")
    args = parser.parse_args(argv)
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    kinds = KINDS if args.kind == "all" else (args.kind,)
    found = entries(cache_dir, kinds)
    if args.command == "list":
        if not found:
            print(f"no caches in {cache_dir}")
            return 0
        print(f"{'kind':<10} {'key':<22} {'size':>9} {'rows':>13} {'last used':<16}  what")
        for e in found:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["last_used"]))
            print(f"{e['kind']:<10} {e['key'][:22]:<22} {human(e['bytes']):>9} {e['complete'] or '':>13} {used:<16}  "
                  f"{e['what']}")
        print(f"{len(found)} caches, {human(sum(e['bytes'] for e in found))} in {cache_dir}")
        return 0
    now, removed, freed = time.time(), 0, 0
    if args.key:  # the full key, or the start of it that `list` prints
        found = [e for e in found if e["key"] == args.key] or [e for e in found if e["key"].startswith(args.key)]
        if len({e["key"] for e in found}) > 1:
            print(f"error: --key {args.key!r} matches {len(found)} caches ({', '.join(e['key'] for e in found)}): "
                  "give more of it", file=sys.stderr)
            return 2
    for e in found:
        if args.older_than is not None and now - e["last_used"] < args.older_than * 86400:
            continue
        folder = Path(e["path"])
        if not remove(folder, args.dry_run):
            print(f"kept {folder}: in use by a running process")
            continue
        print(f"{'would remove' if args.dry_run else 'removed'} {folder} ({human(e['bytes'])})")
        removed, freed = removed + 1, freed + e["bytes"]
    print(f"{'would remove' if args.dry_run else 'removed'} {removed} caches, {human(freed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

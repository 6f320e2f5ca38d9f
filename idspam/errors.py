"""The one exception type for mistakes a user can fix (config values, files, network), and its full-disk kind."""

import errno


class UserError(Exception):
    """A problem with the user's config, files or environment, reported as one line without a traceback."""


class DiskFull(UserError):
    """A write failed for lack of space: one line naming the path. The run counts as interrupted, not failed,
    so its earlier last.ckpt (an atomic write leaves it whole) is kept and resume=auto continues from it."""

def no_space(error: BaseException) -> bool:
    """Whether an error (or one it was raised from: torch wraps the OSError of a full disk) is ENOSPC."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False

def disk_full(path, error: BaseException, need: int | None = None) -> DiskFull:
    """The one line of a full disk; `need`: the bytes the write wanted, when known."""
    while isinstance(error, DiskFull) and error.__context__ is not None:  # name the OSError, not our wrapper
        error = error.__context__
    needs = ""
    if need is not None:
        needs = f", {need / 2**30:.2f} GB needed" if need >= 2**30 else f", {need / 2**20:.2f} MB needed"
    return DiskFull(f"no space left on device writing {str(path)!r} ({type(error).__name__}{needs}); free space "
                    "there (or move cache_dir / the run dir) and run the same command again to resume")


def check_choice(what: str, value, valid) -> None:
    """Raise a UserError naming `value` and the valid ones unless `value` is among them."""
    valid = list(valid)
    if value not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


# the optional extras (pyproject's [project.optional-dependencies]) and the modules whose absence names them
EXTRAS = {"runner": ("lightning", "hydra", "datasets", "torchmetrics"), "plot": ("matplotlib",), "wandb": ("wandb",)}


def missing_extra(extra: str, what: str) -> str | None:
    """None when the modules of idspam's `[extra]` import; else one line naming what needs them, the missing
    modules and the install command. Only looks the modules up (nothing is imported)."""
    import importlib.util

    missing = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if not missing:
        return None
    return (f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install \"idspam[{extra}]\"")


def require_extra(extra: str, what: str) -> None:
    """UserError (one line, with the install command) unless idspam's `[extra]` is installed."""
    message = missing_extra(extra, what)
    if message:
        raise UserError(message)

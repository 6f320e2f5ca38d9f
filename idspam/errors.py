"""The one exception type for mistakes a user can fix (config values, files, network)."""


class UserError(Exception):
    """A problem with the user's config, files or environment, reported as one line without a traceback."""


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

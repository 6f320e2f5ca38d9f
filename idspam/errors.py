"""The one exception type for mistakes a user can fix (config values, files, network)."""


class UserError(Exception):
    """A problem with the user's config, files or environment, reported as one line without a traceback."""


def check_choice(what: str, value, valid) -> None:
    """Raise a UserError naming `value` and the valid ones unless `value` is among them."""
    valid = list(valid)
    if value not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")

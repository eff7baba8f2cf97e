"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class DistilkitError(Exception):
    """Bad input or an unrecoverable condition the user can fix (wrong path, unknown name, ...)."""


class NonFiniteLossError(DistilkitError):
    """A loss became NaN or infinite; the message names the loss part (and step when known)."""

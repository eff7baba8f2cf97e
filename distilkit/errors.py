"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""

import os


class DistilkitError(ValueError):
    """Bad input or an unrecoverable condition the user can fix (wrong path, unknown name, ...); a ValueError,
    so that `except ValueError` around a call with a bad argument catches it as it would in numpy or torch."""


class NonFiniteLossError(DistilkitError):
    """A loss became NaN or infinite; the message names the loss part (and step when known), `part` and
    `value` hold them (None for a non-finite weighted total)."""

    def __init__(self, message: str, part: str | None = None, value: float | None = None) -> None:
        super().__init__(message)
        self.part, self.value = part, value


def os_error_message(err: OSError) -> str:
    """One line for a file-system error: the path(s) it names and the system's reason (disk full,
    permission denied, read-only file system, ...)."""
    reason = err.strerror or str(err) or type(err).__name__
    paths = [os.fsdecode(p) if isinstance(p, (str, bytes, os.PathLike)) else str(p)
             for p in (err.filename, err.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason

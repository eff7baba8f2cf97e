"""Names that become file or folder names (sequences, trackers, stages, recipes): one check, so that no
name read from a list file, a recipe or the command line can point outside the folder it is written into."""

from __future__ import annotations

from typing import Optional

from distilkit.errors import DistilkitError

#: Longest name in bytes (UTF-8) that common file systems accept as one path component.
MAX_NAME_BYTES = 255
PLAIN_NAME_RULE = "a plain name (one file or folder name: no '/', '\\', control characters, '.' or '..')"


def plain_name_problem(name: object) -> Optional[str]:
    """Why `name` cannot be one path component (a folder or file name), or None."""
    if not isinstance(name, str):
        return f"is not a string but {type(name).__name__}"
    if name in ("", ".", ".."):
        return f"is {name!r}" if name else "is empty"
    bad = next((c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"contains {bad!r}"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def is_plain_name(name: object) -> bool:
    """Whether `name` can be one path component: a string without separators or control characters,
    not '', '.' or '..', at most MAX_NAME_BYTES long."""
    return plain_name_problem(name) is None


def check_plain_name(name: object, what: str) -> str:
    """`name` if it is a plain name, else a one-line DistilkitError: "`what` 'x' must be a plain name ..."."""
    problem = plain_name_problem(name)
    if problem is not None:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise DistilkitError(f"{what} {shown} must be {PLAIN_NAME_RULE}: it {problem}")
    return name  # type: ignore[return-value]

"""Atomic file writes: a temp file beside the target, renamed over it only once fully written.

A crash or error leaves either the old file or the new one, never half of one, and no temp file.
The result gets the usual permissions (0666 less the umask), not `mkstemp`'s private 0600.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temp path in `path`'s directory (created if needed); on success it replaces `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)

"""Atomic, durable file writes: a temp file beside the target, flushed to disk, renamed over it once fully written.

A crash or error leaves either the old file or the new one, never half of one, and no temp file; the
file's data and then its directory entry are fsynced, so a power loss cannot leave an empty or partial
file under the final name either. A kill -9 mid-write can leave a temp file (`.{name}.XXXXXXXX.tmp`):
`remove_stale_temps` clears those. The result gets the usual permissions (0666 less the umask), not
`mkstemp`'s private 0600.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# mkstemp's names: the prefix and suffix given below around 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
# Filesystems (some network and FUSE ones) that cannot fsync a directory say so with these.
_NO_DIR_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make `path`'s entries (a rename, a new file or folder in it) durable; a no-op where the OS or the
    filesystem cannot sync a directory (Windows, some network filesystems)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_DIR_SYNC:
            raise
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """`mkdir -p` whose new folders survive a power loss (each one's parent is fsynced)."""
    target = Path(path)
    missing = []
    while not target.is_dir():
        missing.append(target)
        if target.parent == target:
            break
        target = target.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temp path in `path`'s directory (created if needed); on success it is synced to disk and
    replaces `path`, and the directory is synced."""
    target = Path(path)
    make_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as err:  # disk full, file too large, I/O error while writing or syncing: name the file
        if err.filename is None:
            err.filename = str(target)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def is_temp_name(name: str) -> bool:
    """Whether a file name is one `atomic_path` gives its temp files."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left directly in `directory` (regular files
    named like `atomic_path`'s, nothing else; not recursive); returns what was removed. Call it only
    where no write is under way."""
    folder = Path(directory)
    if folder.is_symlink() or not folder.is_dir():
        return []
    removed = []
    for entry in os.scandir(folder):
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            os.remove(entry.path)
            removed.append(Path(entry.path))
    return removed

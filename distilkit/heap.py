"""Keep freed memory in the process (glibc malloc), so per-frame buffers are not page-faulted in again.

glibc returns the top of its heap to the OS whenever a few MB lie free there, and serves large
blocks with mmap. An inference loop that frees and reallocates its buffers every frame then takes
the page faults of fresh memory every frame (hundreds per compiled MixFormerV2-S frame; the cost
measured A/B is in benchmarks/RESULTS.md §3). `retain_freed_memory()` raises both
thresholds for the whole process, which is how jemalloc and tcmalloc behave by default; memory
freed stays reusable by the process instead of going back to the OS. It is process-wide, so it is applied
only where frames are tracked: `distilkit eval`, `distilkit prune` (its reports; not with --dry-run) and the
benchmarks; a library user calls it once in their own inference process.
"""

from __future__ import annotations

import ctypes
import platform

from distilkit.checks import as_int
from distilkit.errors import DistilkitError

__all__ = ["retain_freed_memory"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses larger values on 64-bit systems


def retain_freed_memory(trim_threshold: int = 256 << 20, mmap_threshold: int = _MMAP_THRESHOLD_MAX) -> bool:
    """Keep up to `trim_threshold` bytes free at the heap top and serve blocks below `mmap_threshold`
    bytes from the heap, for this process. True when applied; False where the C library is not glibc
    (macOS, Windows, musl), which keeps its own policy."""
    trim = as_int(trim_threshold, "trim_threshold", minimum=0)
    mmap = as_int(mmap_threshold, "mmap_threshold", minimum=0)
    if mmap > _MMAP_THRESHOLD_MAX:
        raise DistilkitError(f"mmap_threshold must be at most {_MMAP_THRESHOLD_MAX} (glibc's limit), got {mmap}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, min(trim, 2**31 - 1)))

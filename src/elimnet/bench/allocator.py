"""Keep freed memory in the process while timing (glibc malloc).

By default glibc hands large blocks back to the kernel as soon as they are freed (mmap'ed
blocks above a sliding threshold, and the top of the heap above a trim threshold). A forward
pass frees every activation, so the next pass page-faults all of them in again: at batch 64
EfficientNet-Lite0 at 96 px spends more time in the kernel than in the convolutions, and how
long that takes depends on what else the machine is doing. Raising both thresholds makes the
second and later passes reuse the same pages: about 2x lower latency at batch 64 on a 2-core
VM and no page faults at all (tests/test_bench.py checks the freed bytes glibc keeps). The cost is resident memory:
up to `keep` bytes of freed memory stay with the process. PyTorch's own tuning guide suggests
jemalloc or tcmalloc via LD_PRELOAD for the same reason; this needs nothing installed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_BYTES = 1 << 30  # mallopt takes an int: 1 GiB is well inside it
TOP_PAD_BYTES = 1 << 26
KEPT = "glibc, keeps freed memory"
_applied: str | None = None  # glibc offers no way back to its sliding defaults, so remember


def allocator_state(keep_freed: bool) -> str:
    """Apply keep_freed_memory() if asked; either way say what the allocator is in this process."""
    if keep_freed:
        return keep_freed_memory()
    return f"{KEPT} (set earlier in this process)" if _applied == KEPT else "default"


def keep_freed_memory(keep: int = KEEP_BYTES) -> str:
    """Raise glibc's mmap and trim thresholds to `keep` bytes; return what the allocator now is.

    Returns KEPT when applied, else why not (not Linux/glibc, or mallopt refused); the
    benchmark records it next to the thread count, because it changes latency.
    """
    global _applied
    _applied = _mallopt_keep(keep)
    return _applied


def _mallopt_keep(keep: int) -> str:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"default ({platform.system()} {platform.libc_ver()[0] or 'non-glibc'} allocator)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(M_MMAP_THRESHOLD, keep) == 1 and libc.mallopt(M_TRIM_THRESHOLD, keep) == 1
              and libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1)
    except (OSError, AttributeError) as e:
        return f"default glibc (mallopt unavailable: {e})"
    return KEPT if ok else "default glibc (mallopt refused)"

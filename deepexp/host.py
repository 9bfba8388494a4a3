"""Process-wide settings of the host's C library that PyTorch's CPU kernels depend on.

PyTorch has no caching allocator on the CPU: every activation, gradient and temporary of
a step is a fresh `malloc` and is freed by the end of it. glibc serves blocks above
its mmap threshold (128 KiB at first) with `mmap` and gives them back with `munmap`,
and trims the top of its heap once more than 2x that threshold is free there, so the next
step page-faults that memory in again, zeroed by the kernel. glibc raises both thresholds
as it sees large blocks freed, but only up to 32 MiB and 64 MiB, below what a conv net
frees per step. Measured on a 2-core Xeon (scripts/bench_page_faults.py, BENCHMARKS.md
section 8), per training step at batch 128: ResNet-20 in a bare loop in a fresh process
faults 20,000 pages in and spends 69 ms in the kernel, the small CIFAR CNN 8,400 and 31 ms
(15-17% of the step); in the trainer, whose data loading has already raised glibc's
thresholds, 7,000-9,000 pages and 15-18 ms. Raising both thresholds keeps freed memory in
the heap for the next step (then 15-410 faults, about 1 ms); peak resident memory stays
within 2% of what it was, since that memory was in use at the peak anyway.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

# From <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger blocks are still mapped.
MMAP_THRESHOLD = 32 << 20
# Free memory at the heap's top kept for reuse rather than returned; above any step's churn.
TRIM_THRESHOLD = 1 << 30


def user_tuned_malloc() -> bool:
    """True where the environment already sets glibc's malloc parameters; those are left alone."""
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for the next step instead of returning it to the kernel.

    Once per process; True where the setting took effect. Elsewhere (macOS, Windows, musl,
    or a user's own malloc settings) nothing changes and it is False.
    """
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

"""The host under PyTorch's CPU kernels: the C library's memory settings, and how loaded the cores are.

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
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

# From <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger blocks are still mapped.
MMAP_THRESHOLD = 32 << 20
# Free memory at the heap's top kept for reuse rather than returned; above any step's churn.
TRIM_THRESHOLD = 1 << 30


def user_tuned_malloc() -> bool:
    """True where the environment already sets glibc's malloc parameters; those are left alone."""
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    )


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


# --- load: are the cores free? -------------------------------------------------------------
#
# The kernel's load average counts the threads that are running or waiting for a core, averaged
# with an exponential decay (time constant 60 s for the first figure; kernel/sched/loadavg.c).
# It includes this process: right after a study trained with 2 threads, the figure is about 2
# on 2 cores although nothing else runs. So this process's own share is estimated from its CPU
# time, averaged with the same decay, and subtracted. Threads of other processes plus this
# process's threads above the cores means some of them wait: OpenMP workers wait at every
# barrier for the slowest one (on a busy 2-core machine two threads made a ResNet-20 step 4x
# slower than one, 38 against 162 images/s), and a latency timed then measures the queue.

LOAD_TIME_CONSTANT_S = 60.0  # the 1-minute load average's decay (kernel/sched/loadavg.c)
# Kernel threads and daemons that wake now and then keep an idle machine's load average at a few tenths;
# runnable threads up to half a core above the cores do not yet mean that threads wait.
LOAD_SLACK = 0.5


def cores_available() -> int:
    """The cores this process may run on: its affinity mask (taskset, Slurm, containers), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (a study's spawned workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _OwnLoad:
    """This process's share of the 1-minute load average: its CPU use (cores busy on average between two
    calls), decayed as the kernel decays the load average. Starts at 0 when this module is imported."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.value = time.monotonic(), _cpu_seconds(), 0.0

    def update(self) -> float:
        wall, cpu = time.monotonic(), _cpu_seconds()
        if wall > self.wall:
            kept = math.exp(-(wall - self.wall) / LOAD_TIME_CONSTANT_S)
            self.value = self.value * kept + (cpu - self.cpu) / (wall - self.wall) * (1 - kept)
        self.wall, self.cpu = wall, cpu
        return self.value


_OWN_LOAD = _OwnLoad()


@dataclass(frozen=True)
class HostLoad:
    """The machine's load average against its cores.

    `average`: the 1-, 5- and 15-minute load averages (runnable threads, os.getloadavg), over the whole machine;
    `own`: this process's estimated share of the 1-minute figure (threads); `cores`: the cores this process may
    run on; `cpus`: the machine's cores, which the other processes share."""

    average: Tuple[float, float, float]
    own: float
    cores: int
    cpus: int

    @property
    def others(self) -> float:
        """Runnable threads of other processes (1-minute average), never below 0."""
        return max(0.0, self.average[0] - self.own)

    def oversubscribed(self, threads: int) -> bool:
        """Whether `threads` threads of this process would wait for a core: more than the cores it may use, or,
        with the other processes' threads, more than the machine has (beyond LOAD_SLACK)."""
        return threads > self.cores or self.others + threads > self.cpus + LOAD_SLACK

    def free_threads(self) -> int:
        """The most threads this process can run without waiting for a core (at least 1)."""
        return max(1, min(self.cores, math.floor(self.cpus + LOAD_SLACK - self.others)))

    def describe(self) -> str:
        """One phrase for messages: 'load average 3.31 on 2 cores (other processes: 3.3 threads)'."""
        mine = f", {self.cores} for this process" if self.cores != self.cpus else ""
        return f"load average {self.average[0]:.2f} on {self.cpus} cores{mine} (other processes: {self.others:.1f} threads)"

    def as_dict(self) -> dict:
        return {"load_average": [round(x, 2) for x in self.average], "load_own": round(self.own, 2), "cores": self.cores, "cpus": self.cpus}

    @classmethod
    def from_dict(cls, d: dict) -> "HostLoad":
        return cls(tuple(d["load_average"]), d.get("load_own", 0.0), d["cores"], d.get("cpus", d["cores"]))


def host_load() -> Optional[HostLoad]:
    """The load now; None where the system has no load average (Windows)."""
    try:
        average = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return HostLoad(tuple(average), _OWN_LOAD.update(), cores_available(), os.cpu_count() or cores_available())


_warned_oversubscribed = False


def oversubscription_warning(load: Optional[HostLoad], threads: int) -> Optional[str]:
    """The start-of-run warning where `threads` (> 1) would wait for cores (HostLoad.oversubscribed), with the
    thread count to use instead; once per process (a study's later runs meet the same machine), else None."""
    global _warned_oversubscribed
    if load is None or threads <= 1 or not load.oversubscribed(threads) or _warned_oversubscribed:
        return None
    _warned_oversubscribed = True
    return f"{load.describe()}: {threads} threads per step will wait for each other; device.threads={load.free_threads()} is likely faster"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"

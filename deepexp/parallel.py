"""Work spread over local processes, each with its share of the CPU threads.

Small models use two cores badly from one process (their matrices are too small for
intra-op threads to pay), so the studies run `n_workers` runs at once and NAS runs
`n_workers` search workers, each process with `threads // n_workers` threads: the cores
are divided, not fought over (scripts/bench_sweep.py measures the difference).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, List, Sequence

from .errors import DeepexpError


def threads_per_worker(threads: int, n_workers: int) -> int:
    """Each worker's share of `threads` (0: torch's default, all cores)."""
    import torch  # here, not at the top: `deepexp report` imports the study helpers without torch

    return max(1, (threads or torch.get_num_threads()) // n_workers)


def map_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], n_workers: int, threads: int) -> List[Any]:
    """`[fn(*job) for job in jobs]`, `n_workers` at a time in fresh processes with `threads` threads each.

    Results come back in order; an exception in a job (a DeepexpError keeps its one-line message)
    is raised here. `fn` must be importable (a module-level function)."""
    import torch

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            return list(pool.map(_call, [(fn, job) for job in jobs]))
    except BrokenProcessPool:
        raise DeepexpError("a worker process died (killed, or out of memory); run the same command again to "
                           "resume: finished work is kept") from None


def _call(task: tuple) -> Any:
    fn, job = task
    return fn(*job)

"""Work spread over local processes, each with its share of the CPU threads and, on CUDA, its GPU.

Small models use two cores badly from one process (their matrices are too small for
intra-op threads to pay), so the studies run `n_workers` runs at once and NAS runs
`n_workers` search workers, each process with `threads // n_workers` threads: the cores
are divided, not fought over (scripts/bench_sweep.py measures the difference). On CUDA,
worker i trains on GPU i mod (number of GPUs), so that several GPUs are used and none is
shared by more workers than it must; with a single GPU a study runs one worker unless
`n_workers` was asked for (`worker_plan`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .errors import DeepexpError

_SLOT = 0  # this process's number among map_in_processes' workers (0 in the main process)


def threads_per_worker(threads: int, n_workers: int) -> int:
    """Each worker's share of `threads` (0: torch's default, all cores)."""
    import torch  # here, not at the top: `deepexp report` imports the study helpers without torch

    return max(1, (threads or torch.get_num_threads()) // n_workers)


def gpu_count(kind: str, index: Optional[int]) -> int:
    """How many CUDA GPUs runs with `device.type=kind` and `device.index=index` train on: none on the CPU
    (`cpu`, or `auto`/`cuda` where torch sees no GPU: the trainer refuses `cuda` there itself), one where
    `index` names it, else every visible GPU (torch.cuda.device_count)."""
    import torch

    if kind == "cpu" or not torch.cuda.is_available():
        return 0
    return 1 if index is not None else torch.cuda.device_count()


def worker_device(kind: str, index: Optional[int], worker: int) -> Optional[int]:
    """The CUDA GPU number that worker `worker` (0, 1, ...) trains on: `index` where it names one,
    else worker mod the number of GPUs; None when the runs do not train on CUDA."""
    count = gpu_count(kind, index)
    if count == 0:
        return None
    return index if index is not None else worker % count


def worker_plan(kind: str, index: Optional[int], n_workers: int, given: bool) -> Tuple[int, Optional[str]]:
    """How many workers to start for `n_workers`, and the line that says why, when that differs.

    Workers on one GPU do not share it well (each keeps its own CUDA context and memory pool, and their
    kernels queue behind one another), so on a single GPU `n_workers` left at the study's default becomes
    1; an `n_workers` the user `given` on the command line is kept. On the CPU and on several GPUs
    `n_workers` stands as it is.
    """
    if n_workers > 1 and not given and gpu_count(kind, index) == 1:
        return 1, (
            f"one GPU: its runs train one at a time, not {n_workers} sharing it "
            f"(n_workers={n_workers} on the command line runs {n_workers} at once anyway)"
        )
    return n_workers, None


def worker_slot() -> int:
    """This process's number among the workers of `map_in_processes`, 0 to n_workers - 1, each held by
    one process for its whole life (0 outside a pool)."""
    return _SLOT


def map_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], n_workers: int, threads: int) -> List[Any]:
    """`[fn(*job) for job in jobs]`, `n_workers` at a time in fresh processes with `threads` threads each;
    in each process `worker_slot()` says which of the workers it is.

    Results come back in order; an exception in a job (a DeepexpError keeps its one-line message)
    is raised here. `fn` must be importable (a module-level function)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    slots = context.Queue()
    for slot in range(n_workers):
        slots.put(slot)
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=_start_worker, initargs=(threads, slots)) as pool:
            return list(pool.map(_call, [(fn, job) for job in jobs]))
    except BrokenProcessPool:
        raise DeepexpError("a worker process died (killed, or out of memory); run the same command again to resume: finished work is kept") from None


def _start_worker(threads: int, slots) -> None:
    """A worker process's first act: its thread count, and its own slot number from the queue."""
    global _SLOT
    import torch

    torch.set_num_threads(threads)
    _SLOT = slots.get()


def _call(task: tuple) -> Any:
    fn, job = task
    return fn(*job)

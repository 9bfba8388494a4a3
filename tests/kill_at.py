"""Run `deepexp ARGS` and SIGKILL it at one exact point (for the crash-safety tests only).

    python kill_at.py POINT N ARGS...

POINT (the Nth time this process reaches it):
  batch               a batch about to be normalised (N small: a training step of epoch 1)
  evaluate            an evaluation starting (validation after each epoch, the test set at the end)
  checkpoint_written  a checkpoint complete in its temp file, not yet renamed to last.pt
  checkpoint_rotated  last.pt already moved to prev.pt, the new one not yet renamed into place
  metrics_written     metrics.json complete in its temp file, not yet renamed

The hooks wrap deepexp's own functions from the outside, so the code under test is the real one.
"""

import os
import signal
import sys
from pathlib import Path

import deepexp.rundir
import deepexp.train
from deepexp.cli import main

reached = 0
nth = 0


def maybe_die() -> None:
    global reached
    reached += 1
    if reached == nth:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def before(function, condition=lambda *a, **k: True):
    def wrapped(*a, **k):
        if condition(*a, **k):
            maybe_die()
        return function(*a, **k)

    return wrapped


def after_checkpoint_fsync(fd):
    real_fsync(fd)
    if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{deepexp.rundir.LAST}."):  # the temp checkpoint
        maybe_die()


real_fsync = os.fsync


def install(point: str) -> None:
    if point == "batch":
        deepexp.train.normalize = before(deepexp.train.normalize)
    elif point == "evaluate":
        deepexp.train.evaluate = before(deepexp.train.evaluate)
    elif point == "checkpoint_written":
        os.fsync = after_checkpoint_fsync
    elif point == "checkpoint_rotated":
        os.replace = before(os.replace, lambda src, dst: Path(dst).name == deepexp.rundir.LAST)
    elif point == "metrics_written":
        os.replace = before(os.replace, lambda src, dst: Path(dst).name == "metrics.json")
    else:
        sys.exit(f"unknown point {point!r}")


if __name__ == "__main__":  # (not in the worker processes a study spawns: only this process is killed)
    nth = int(sys.argv[2])
    install(sys.argv[1])
    main(sys.argv[3:])

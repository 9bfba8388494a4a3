"""Hydra callbacks deepexp adds to a command (cli.py names them in the overrides it gives Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List

from hydra.experimental.callback import Callback

from .errors import ConfigError, RunLockedError, fail
from .rundir import RunLock


class SweepLock(Callback):
    """A -m sweep takes its folder's RunLock in `on_multirun_start`, which Hydra calls with the sweep's config
    before its basic sweeper writes DIR/multirun.yaml (hydra/_internal/hydra.py, Hydra.multirun), so that a
    second sweep into a folder in use is refused before that. The folder is the one the sweep resolves,
    whatever names it: `hydra.sweep.dir=DIR`, an interpolation, or the default named by the second the sweep
    started (Hydra's `now` resolver caches its value in the sweep's config, which every job reuses).
    `cli.launch` releases the lock when the sweep ends (release_all)."""

    held: List[RunLock] = []  # the locks this process holds for its sweeps

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        lock = RunLock(folder)
        try:
            lock.__enter__()
        except RunLockedError:
            message = f"{folder} is in use by another deepexp sweep; wait for it or choose another hydra.sweep.dir"
        except ConfigError as exc:
            message = str(exc)
        else:
            SweepLock.held.append(lock)
            return
        sys.exit(fail(message))  # SystemExit: Hydra's callbacks turn an Exception into a warning and go on

    @classmethod
    def release_all(cls) -> None:
        """Release every sweep lock this process holds."""
        while cls.held:
            cls.held.pop().__exit__(None, None, None)

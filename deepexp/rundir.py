"""The run directory on disk: atomic writes, metrics.json, checkpoints, and a lock.

Layout (docs/formats.md, "Run directory"): `metrics.json`, `checkpoints/last.pt` (+ `prev.pt`, the
previous good one, while the run is in progress), TensorBoard event files, Hydra's
`.hydra/`, and `.lock` while a process works in the folder. Every file is written
to a temporary name, flushed and renamed, so a crash at any moment leaves either
the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import CheckpointError, ConfigError, RunLockedError

METRICS = "metrics.json"
LAST, PREV = "last.pt", "prev.pt"
FINISHED = ("completed", "diverged")  # statuses of a run that no process continues
# A run's final numbers as `deepexp report` tabulates them (commands/report.py run_row) and ranks runs by (its
# `metric=`): here, at the bottom of the package, so that the config schema can check `metric=` without
# importing the report.
RUN_METRICS = (
    "test_acc",
    "test_loss",
    "best_val_acc",
    "final_val_acc",
    "final_val_loss",
    "final_train_loss",
    "final_train_acc",
    "seconds",
    "params",
    "epochs_done",
    "clipped_fraction",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb", before_replace: Optional[Callable[[], None]] = None) -> None:
    """Write through `write(file)` to a temp file in the same folder, fsync, then rename over `path`
    (calling `before_replace()` just before the rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace:
            before_replace()
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)  # after a failure; after the rename there is nothing left to remove


def _json_safe(obj: Any) -> Any:
    """NaN and infinity are not JSON: store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def read_json(path: Path) -> Optional[Any]:
    """A JSON file's content, or None when it is missing or cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# Config keys that say where and how a run executes and what it logs, not what it computes: each entry is a
# flat config key or, ending in ".", every key of that group, matched as a prefix (`key.startswith(EXECUTION_KEYS)`).
# A run may resume with other values of these (train.RESUMABLE_CHANGES), and `deepexp report` does not group
# runs apart by them (commands/report.py NOT_A_FACTOR). `compile` and `channels_last` change the kernels, not
# the model's function; `eval_test` only whether the test set is evaluated at the end.
EXECUTION_KEYS = ("resume", "data.", "device.", "monitor.", "eval_batch_size", "eval_test", "channels_last", "compile")


# Config keys added after runs were already on disk, with the value that reproduces the old behaviour: a run
# without the key ran as this value says. The trainer's resumability check and `deepexp report` read old runs
# through it (found with `git log -p configs/`; keys an option group's schema gained for choices that ignore
# them, such as optim.betas for SGD, included). tf32: exactly on the CPU; earlier CUDA runs had PyTorch's
# defaults, float32 matmuls but TF32 convolutions on compute capability 8.0+, and continue in float32.
NEW_OPTION_DEFAULTS: Dict[str, Any] = {
    "on_nan": "stop",
    "eval_test": True,
    "tf32": False,
    "device.index": None,
    "dataset.path": None,
    "dataset.num_classes": None,
    "dataset.channels": 1,
    "dataset.train_size": 2048,
    "dataset.test_size": 512,
    "optim.momentum": 0.9,
    "optim.nesterov": False,
    "optim.betas": [0.9, 0.999],
    "sched.step_size": 30,
    "sched.gamma": 0.1,
    "sched.min_lr_factor": 0.0,
}


def with_new_options(configs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Flat configs of runs written at different times, each given the keys of NEW_OPTION_DEFAULTS that another
    of them has, at their old-behaviour value: an old run and an identical newer one then compare equal."""
    present = [k for k in NEW_OPTION_DEFAULTS if any(k in c for c in configs)]
    return [{**c, **{k: NEW_OPTION_DEFAULTS[k] for k in present if k not in c}} for c in configs]


class MetricsError(ConfigError):
    """A metrics.json that deepexp cannot read: not JSON (cut short, say), or not shaped as the trainer
    writes it. `path` is the file, `reason` says what is wrong with it. Exit code 2."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}; not a metrics.json deepexp can read (move it away, or choose another run directory)")


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")  # in every epoch row the trainer writes


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def metrics_problem(data: Any) -> Optional[str]:
    """Why `data`, a parsed metrics.json, is not shaped as the trainer writes it, or None when it is.

    Checks the fields that deepexp reads back (train, resume=true, report): `status` a string, `config`
    an object; where present, `history` a list of objects each with numbers (or null, NaN's stand-in)
    under HISTORY_KEYS, `epochs_done` and `params` whole numbers, `seconds` and `best_val_acc` numbers,
    `test` an object of numbers, `data` and `provenance` objects (each of these may be null)."""
    if not isinstance(data, dict):
        return f"holds {_kind(data)}, not an object"
    if not isinstance(data.get("status"), str):
        return f"status is {_kind(data.get('status'))}, not a string" if "status" in data else "no status"
    if not isinstance(data.get("config"), dict):
        return f"config is {_kind(data.get('config'))}, not an object" if "config" in data else "no config"
    history = data.get("history")
    if history is not None:
        if not isinstance(history, list):
            return f"history is {_kind(history)}, not a list of epochs"
        for i, row in enumerate(history):
            if not isinstance(row, dict):
                return f"history[{i}] is {_kind(row)}, not an object"
            bad = next((k for k in HISTORY_KEYS if k not in row or not _number(row[k])), None)
            if bad:
                return f"history[{i}] has no {bad}" if bad not in row else f"history[{i}].{bad} is {_kind(row[bad])}, not a number"
    for key, whole in (("epochs_done", True), ("params", True), ("seconds", False), ("best_val_acc", False)):
        value = data.get(key)
        if not _number(value) or (whole and isinstance(value, float)):
            return f"{key} is {_kind(value) if not _number(value) else value}, not a {'whole ' if whole else ''}number"
    test = data.get("test")
    if test is not None:
        if not isinstance(test, dict):
            return f"test is {_kind(test)}, not an object"
        bad = next((k for k in ("acc", "loss") if not _number(test.get(k))), None)
        if bad:
            return f"test.{bad} is {_kind(test[bad])}, not a number"
    for key in ("data", "provenance"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is {_kind(data[key])}, not an object"
    return None


def read_metrics(run_dir: Path) -> Optional[dict]:
    """The run's metrics.json, checked by `metrics_problem`; None when there is none (no such file, or no such folder).

    Raises:
        MetricsError: the file cannot be read, is not JSON (a copy cut short) or is not shaped as
            the trainer writes it; its message names the file and what is wrong.
    """
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):  # no such file, or a file where a folder of its path should be
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsError(path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MetricsError(path, f"not valid JSON ({exc})") from None
    problem = metrics_problem(data)
    if problem:
        raise MetricsError(path, problem)
    return data


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write `<run_dir>/metrics.json` atomically. Once it says the run finished (status completed or
    diverged), `checkpoints/prev.pt` is removed: it is there so that a crash while `last.pt` is being
    replaced leaves one good checkpoint, and no process writes a checkpoint of a finished run again
    (the final weights stay in `last.pt`). Raises ConfigError when the folder cannot be written."""
    write_json(Path(run_dir) / METRICS, metrics)
    if metrics.get("status") in FINISHED:
        (Path(run_dir) / "checkpoints" / PREV).unlink(missing_ok=True)


# --- checkpoints ------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write checkpoints/last.pt atomically, keeping the previous good one as prev.pt."""
    import torch  # here, not at the top: `deepexp report` reads run directories without importing torch

    folder = Path(run_dir) / "checkpoints"
    last = folder / LAST
    buffer = io.BytesIO()
    torch.save(state, buffer)  # serialised first: a full disk then fails in write() as an OSError, not inside torch
    for stale in folder.glob(f".{LAST}.*.tmp"):  # left by a killed write; the run lock keeps out live writers
        stale.unlink(missing_ok=True)

    def keep_previous() -> None:
        # The new file is complete on disk before last.pt moves to prev.pt, so at every
        # instant at least one good checkpoint exists under one of the two names.
        if last.exists():
            os.replace(last, folder / PREV)

    atomic_write(last, lambda f: f.write(buffer.getbuffer()), before_replace=keep_previous)


def load_checkpoint(path: Path) -> dict:
    """Load one checkpoint with `weights_only=True`; a damaged file raises CheckpointError."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a deepexp checkpoint (no model state or epoch)")
    return state


def load_latest_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> Optional[Tuple[dict, Path]]:
    """The newest good checkpoint of a run: last.pt, else prev.pt with a warning, else None."""
    folder = Path(run_dir) / "checkpoints"
    candidates = [p for p in (folder / LAST, folder / PREV) if p.exists()]
    errors: List[str] = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        for error in errors:  # only when the fallback worked; otherwise the one line below says it all
            warn(f"{error}; falling back to the previous checkpoint")
        return state, path
    if errors:
        raise CheckpointError(f"no usable checkpoint in {folder}: {errors[-1]}")
    return None


# --- the lock ----------------------------------------------------------------------------


class RunLock:
    """An exclusive flock on `<run_dir>/.lock`: released by the kernel when the process dies.

    Re-entrant within one process: the CLI takes a run's lock before anything is written in the
    folder and the trainer takes it again for the same folder; the flock is released when the
    outermost holder leaves.

    The holder removes `.lock` as it leaves (a killed process leaves it, unlocked), so finished runs
    keep no lock file. Removing a lock file is safe because the holder unlinks it while still holding
    the flock, and a process that gets the flock checks that the file it locked is still the one at
    `.lock` (same device and inode): one that opened the file just before the holder removed it then
    holds a lock on a file nobody else can open, and starts over with a fresh `.lock`, which two
    processes cannot both lock."""

    _held: Dict[Tuple[int, Path], int] = {}  # (pid, lock file) -> how many holders in that process

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: Optional[int] = None
        self._key: Optional[Tuple[int, Path]] = None

    def __enter__(self) -> "RunLock":
        """Take the lock. Raises RunLockedError while another process holds it, ConfigError when the
        folder cannot be made or written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            key = (os.getpid(), self.path.resolve())
        except OSError as exc:
            raise ConfigError(f"cannot use run directory {self.path.parent}: {exc.strerror or exc}") from None
        if RunLock._held.get(key):
            RunLock._held[key] += 1
            self._key = key
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot use run directory {self.path.parent}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by another deepexp process; wait for it or choose another hydra.run.dir"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed this file as it left: lock the one at .lock now
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._key = key
        RunLock._held[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self._key is None:
            return
        RunLock._held[self._key] -= 1
        if not RunLock._held[self._key]:
            del RunLock._held[self._key]
        self._key = None
        if self._fd is not None:
            with contextlib.suppress(OSError):  # a folder made read-only meanwhile keeps its (unlocked) file
                self.path.unlink(missing_ok=True)  # while the flock is held (see the class docstring)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is the file at `path` now (not one removed since it was opened)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

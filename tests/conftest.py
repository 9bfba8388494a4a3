"""Shared fixtures: compose the real config (Hydra's compose API) and shrink it for tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

# pytest-xdist runs one test process per core (pyproject.toml). Each, with every deepexp process its tests
# start, gets an equal share of the threads, so that processes divide the cores instead of fighting over
# them. Set before torch is imported, which reads it once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _CORES // _WORKERS)))

from deepexp.config import DataConfig, compose_train  # noqa: E402,F401 (after the thread share; compose_train for the tests)
from deepexp.data import data_roots  # noqa: E402


def dataset_in_roots(*relative: str) -> bool:
    return any((root / rel).exists() for root in data_roots(DataConfig()) for rel in relative)


def mnist_available() -> bool:
    return dataset_in_roots("MNIST/raw/t10k-images-idx3-ubyte")


def fashion_mnist_available() -> bool:
    from deepexp.data import DEBIAN_FASHION_MNIST, find_idx_files

    folders = [root / "FashionMNIST" / "raw" for root in data_roots(DataConfig())] + [DEBIAN_FASHION_MNIST]
    return any(find_idx_files(folder) is not None for folder in folders)


def cifar_available() -> bool:
    return dataset_in_roots("cifar10-subset.npz", "cifar-10-batches-py")


needs_mnist = pytest.mark.skipif(
    not mnist_available(), reason="real MNIST not found (set DEEPEXP_DATA to a folder with MNIST/raw, e.g. ../shared/data)"
)
needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not found (data root or apt-get install dataset-fashion-mnist); the studies' quick presets train on it",
)
needs_cifar = pytest.mark.skipif(not cifar_available(), reason="CIFAR-10 (full or cifar10-subset.npz) not found in the data root")


def read_csv(path: Path) -> List[dict]:
    """The rows of a CSV file a command wrote, as dicts."""
    with open(path) as f:
        return list(csv.DictReader(f))


def pytest_collection_modifyitems(items):
    """Long end-to-end tests (marked slow) first: parallel workers start them together and the
    short tests fill the gaps, instead of one long test starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


QUICK = ["subset=2000", "epochs=2", "monitor.every_n_steps=5", "monitor.probe_size=128", "monitor.figure=false"]
# A run of a second or so on 64 synthetic images, for tests of what deepexp records and refuses, not of learning.
TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=16", "model.depth=1", "model.width=8", "epochs=1", "monitor.figure=false"]


def run_cli(args: List[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`deepexp ARGS` in a subprocess, exactly as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "deepexp", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def finished_run(folder: Path, config: dict, acc: float, loss: float = 1.0) -> Path:
    """A finished one-epoch run's metrics.json as the trainer writes it, with the flat `config` given and
    accuracy `acc` everywhere (training, validation, test), for tests of what reads runs."""
    folder.mkdir(parents=True)
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": acc, "val_loss": 1.0, "val_acc": acc}]
    metrics = {
        "status": "completed",
        "config": config,
        "params": 10,
        "epochs_done": 1,
        "history": history,
        "test": {"acc": acc, "loss": loss},
        "best_val_acc": acc,
        "seconds": 1.0,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder

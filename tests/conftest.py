"""Shared fixtures: compose the real config (Hydra's compose API) and shrink it for tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from deepexp.config import DataConfig, TrainConfig, compose_config, validate
from deepexp.data import data_roots



def dataset_in_roots(*relative: str) -> bool:
    return any((root / rel).exists() for root in data_roots(DataConfig()) for rel in relative)


def mnist_available() -> bool:
    return dataset_in_roots("MNIST/raw/t10k-images-idx3-ubyte")


def cifar_available() -> bool:
    return dataset_in_roots("cifar10-subset.npz", "cifar-10-batches-py")


needs_mnist = pytest.mark.skipif(not mnist_available(), reason="real MNIST not found (set DEEPEXP_DATA to a folder with MNIST/raw, e.g. ../shared/data)")
needs_cifar = pytest.mark.skipif(not cifar_available(), reason="CIFAR-10 (full or cifar10-subset.npz) not found in the data root")


def compose_train(overrides: List[str] = ()) -> TrainConfig:
    """The real `deepexp train` config with `overrides`, validated into typed objects."""
    return validate(compose_config("train", overrides))


QUICK = ["subset=2000", "epochs=2", "monitor.every_n_steps=5", "monitor.probe_size=128", "monitor.figure=false"]


def run_cli(args: List[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`deepexp ARGS` in a subprocess, exactly as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "deepexp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)

"""Run a list of trainer configs inside one experiment directory.

Each run lives in `<exp_dir>/runs/<name>/` in the ordinary run-directory format,
so it is also visible in TensorBoard. Completed runs are skipped, interrupted
ones resume from their checkpoint, and a diverged run is recorded and the list
goes on: all of that is the trainer's own behaviour on an existing run directory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

from hydra.core.hydra_config import HydraConfig
from rich.console import Console

from ..config import compose_config, to_plain, validate
from ..parallel import map_in_processes, threads_per_worker
from ..progress import QuietReporter


def run_study(cfg, command: str, plan: Callable[[Any], List["RunSpec"]], write_study: Callable[..., Path]) -> int:
    """What every study command does: validate, plan the runs, run them, write the report."""
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    specs = plan(study)
    console.print(f"{command} study: {len(specs)} runs in {exp_dir}", highlight=False)
    results = run_all(specs, exp_dir, console, command, study.n_workers)
    write_study(study, results, exp_dir, console, time.perf_counter() - start)
    return 0


def group_overrides(study: Any, groups: Dict[str, str]) -> Dict[str, Any]:
    """`deepexp train` overrides for a study's own choices of trainer groups, every field included.

    `groups` maps group name -> the field that names the choice (`name`, or `type` for device).
    """
    out: Dict[str, Any] = {}
    for group_name, choice_key in groups.items():
        node = to_plain(getattr(study, group_name))
        out[group_name] = node.pop(choice_key)
        out.update({f"{group_name}.{k}": "null" if v is None else v for k, v in node.items()})
    return out


def experiment_dir() -> Path:
    """The folder Hydra made for this command (`hydra.run.dir=PATH` to choose it)."""
    return Path(HydraConfig.get().runtime.output_dir)


def study_console() -> Console:
    """Rich output; logs and pipes get room for the whole summary table."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


@dataclass
class RunSpec:
    name: str  # folder under runs/
    labels: Dict[str, Any]  # what distinguishes this run in the tables (variant, act, seed, ...)
    overrides: List[str] = field(default_factory=list)  # `deepexp train` overrides


def run_all(specs: List[RunSpec], exp_dir: Path, console: Console, command: str, n_workers: int = 1) -> List[Tuple[RunSpec, dict]]:
    """Train every spec (or pick up its finished result), `n_workers` at a time in separate processes
    that share the CPU threads; returns (spec, metrics) pairs in order."""
    configs = [validate(compose_config("train", spec.overrides)) for spec in specs]  # all bad input before any work
    counters = [f"{i}/{len(specs)}" for i in range(1, len(specs) + 1)]
    if n_workers == 1 or len(specs) == 1:
        metrics = [run_one(spec, cfg, exp_dir, console, command, counter) for spec, cfg, counter in zip(specs, configs, counters)]
    else:
        threads = threads_per_worker(configs[0].device.threads, n_workers)
        console.print(f"{n_workers} runs at a time, {threads} thread(s) each", highlight=False)
        for cfg in configs:
            cfg.device.threads = threads
        jobs = [(spec, cfg, exp_dir, command, counter) for spec, cfg, counter in zip(specs, configs, counters)]
        metrics = map_in_processes(run_in_worker, jobs, n_workers, threads)
    return list(zip(specs, metrics))


def provenance_values(runs: Iterable[dict], key: str) -> str:
    """The distinct values of provenance `key` (host, device, threads, torch, ...) over the metrics dicts
    `runs`, the earlier processes of resumed runs included, in order of first appearance and joined by
    ", "; "?" where no run recorded it. A study's runs may have trained on several hosts or devices
    (a Slurm sweep, a run resumed elsewhere), and the machine writing the report may be none of them."""
    values: List[Any] = []
    for m in runs:
        prov = m.get("provenance") or {}
        for attempt in (prov, *prov.get("earlier_attempts", [])):
            value = attempt.get(key)
            if value is not None and value not in values:
                values.append(value)
    return ", ".join(map(str, values)) or "?"


def run_in_worker(spec: RunSpec, cfg: Any, exp_dir: Path, command: str, counter: str) -> dict:
    """run_one in a worker process (which has its own console)."""
    return run_one(spec, cfg, exp_dir, study_console(), command, counter)


def run_one(spec: RunSpec, cfg: Any, exp_dir: Path, console: Console, command: str, counter: str) -> dict:
    """Train one run in `<exp_dir>/runs/<spec.name>` (or pick up its result) and print one line about it."""
    from ..train import train  # here, not at the top: `deepexp report` uses this module without torch

    start = time.perf_counter()
    result = train(cfg, exp_dir / "runs" / spec.name, QuietReporter(label=spec.name),
                   provenance={"command": command, "overrides": spec.overrides, "labels": spec.labels})
    m = result.metrics
    if m["status"] != "completed":
        outcome = f"diverged at step {m.get('diverged_at_step')}"
    elif m.get("test"):
        outcome = f"test acc {m['test']['acc']:.4f}"
    else:  # eval_test=false
        outcome = f"best val acc {m['best_val_acc']:.4f}"
    console.print(f"[{counter}] {spec.name}: {m['status']}, {outcome} ({time.perf_counter() - start:.1f} s)",
                  highlight=False, markup=False)
    return m

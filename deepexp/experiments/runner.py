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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from rich.console import Console

from ..config import compose_config, hydra_overrides, override_parser, parse_key, to_plain, validate
from ..errors import ConfigError
from ..parallel import map_in_processes, threads_per_worker
from ..progress import QuietReporter


def run_study(cfg, command: str, plan: Callable[[Any], List["RunSpec"]], write_study: Callable[..., Path]) -> int:
    """What every study command does: validate, plan the runs, run them, write the report."""
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    specs = plan(study)
    console.print(f"{command} study: {len(specs)} runs in {exp_dir}", highlight=False, soft_wrap=True)
    results = run_all(specs, exp_dir, console, command, study.n_workers)
    write_study(study, results, exp_dir, console, time.perf_counter() - start)
    return 0


def group_overrides(study: Any, groups: Dict[str, str]) -> Dict[str, Any]:
    """The study's own choices of trainer groups, every field included, as {train key: value}
    (for `train_overrides`, which writes them in Hydra's grammar).

    `groups` maps group name -> the field that names the choice (`name`, or `type` for device).
    """
    out: Dict[str, Any] = {}
    for group_name, choice_key in groups.items():
        node = to_plain(getattr(study, group_name))
        out[group_name] = node.pop(choice_key)
        out.update({f"{group_name}.{k}": v for k, v in node.items()})
    return out


def train_overrides(study: Any, values: Dict[str, Any], extra: Sequence[str], option: str,
                    own_keys: Optional[Dict[str, str]] = None) -> List[str]:
    """The `deepexp train` overrides of one run: the study's `values` ({train key: Python value}),
    each written by `hydra_override` (so paths with `=`, spaces, commas, brackets or quotes stay one
    value), then the user's `extra` overrides (the study's `train=[...]` or `overrides=[...]`) as given.

    Raises:
        ConfigError: an extra override sets a key in `values` or in `own_keys` (see `check_extra`).
    """
    check_extra(study, [*values, *(own_keys or {})], extra, option, own_keys)
    return hydra_overrides(values) + list(extra)


def check_extra(study: Any, keys: Iterable[str], extra: Sequence[str], option: str,
                own_keys: Optional[Dict[str, str]] = None) -> None:
    """Refuse an extra override (`option=[...]`) of a key the study sets in its runs (`keys`): the
    study's tables, figures and report describe its own settings, and an epochs count or a seed
    changed behind them makes them wrong. `own_keys` names the study option to use instead where it
    is not the train key itself (`seed` -> `seeds=N`); a key the study also has (lr, dataset.path)
    is named as it is.

    Raises:
        ConfigError: the first such override, in one line.
    """
    keys = set(keys)
    for line in extra:
        key = parse_key(line)
        if key not in keys:
            continue
        instead = (own_keys or {}).get(key) or (f"{key}=..." if has_key(study, key) else None)
        advice = f"use the study's own {instead} instead" if instead else "the study does not let it change"
        raise ConfigError(f"{option}=[...]: {line!r} sets {key}, which the study sets itself in every run; {advice}")


def has_key(study: Any, dotted: str) -> bool:
    """Whether the typed study config has `dotted` (`lr`, `dataset.path`)."""
    node = study
    for part in dotted.split("."):
        if not hasattr(node, part):
            return False
        node = getattr(node, part)
    return True


def parse_pairs(lines: Sequence[str], option: str) -> Dict[str, Any]:
    """{key: value} of user overrides held in a study option (e.g. residual's `no_norm_overrides`),
    read by Hydra's parser: quotes removed, numbers and bools typed.

    Raises:
        ConfigError: a line that is not a plain `key=value` (a sweep, `+key`, `~key`).
    """
    pairs: Dict[str, Any] = {}
    for line in lines:
        parsed = override_parser().parse_override(line)
        if parsed.is_sweep_override() or parsed.is_add() or parsed.is_force_add() or parsed.is_delete():
            raise ConfigError(f"{option}: {line!r} must be a plain key=value override")
        pairs[parsed.key_or_group] = parsed.value()
    return pairs


def experiment_dir() -> Path:
    """The folder Hydra made for this command (`hydra.run.dir=PATH` to choose it)."""
    return Path(HydraConfig.get().runtime.output_dir)


def study_console() -> Console:
    """Rich output; logs and pipes get room for the whole summary table. Lines that hold a path are
    printed with soft_wrap=True (the terminal wraps them, nothing is cut or broken by rich)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def preset_note(preset: str) -> List[str]:
    """The report's first limitation for a study run with `preset=quick` (none for another preset): its
    numbers are a first look, sized for a 2-core CPU, not the study's result."""
    if preset != "quick":
        return []
    return ["Quick results are a first look (`preset=quick`: less data, fewer epochs and seeds, sized for a 2-core CPU): "
            "they show that the study runs and which way its effects lean, not how large they are. "
            "Run the study without `preset=quick` for the results to report."]


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

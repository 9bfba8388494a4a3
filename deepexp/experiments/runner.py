"""Run a list of trainer configs inside one experiment directory.

Each run lives in `<exp_dir>/runs/<name>/` in the ordinary run-directory format,
so it is also visible in TensorBoard. Completed runs are skipped, interrupted
ones resume from their checkpoint, and a diverged run is recorded and the list
goes on: all of that is the trainer's own behaviour on an existing run directory.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from rich.console import Console

from ..config import CHOICE_FIELDS, SeededStudyConfig, StudyConfig, check_choice_field, compose_config, compose_train, config_choices
from ..config import first_line, hydra_override, hydra_overrides, job_output_dir, override_parser, parse_key, to_plain, unparsable, validate
from ..errors import ConfigError
from ..parallel import map_in_processes, threads_per_worker, worker_device, worker_plan, worker_slot
from ..progress import QuietReporter, plain_console


def run_study(cfg, command: str, plan: Callable[[Any], List["RunSpec"]], write_study: Callable[..., Path]) -> int:
    """What every study command does: validate, plan the runs, run them, write the report."""
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    specs = plan(study)
    console.print(f"{command} study: {len(specs)} runs in {exp_dir}", highlight=False, soft_wrap=True)
    results = run_all(specs, exp_dir, console, command, study.n_workers, on_command_line("n_workers"))
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


# The trainer groups a study may choose for all its runs, in the order their overrides are written.
STUDY_GROUPS = ("dataset", "act", "init", "device")


def base_overrides(study: StudyConfig, own: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """{train key: value} that every run of `study` gets, before its per-run values (model, seed, ...)
    and the user's `overrides=[...]` (train_overrides adds those):

    - `epochs` and `subset` of a SeededStudyConfig (`subset` also when null, all images: the study's own
      key either way), `batch_size` and `lr`;
    - `monitor.figure=false`: a study draws its own figures from metrics.json, not one per run and epoch;
    - every field of the trainer groups the study chooses (STUDY_GROUPS it has: dataset, act or init, device);
    - then `own`, the settings only this study gives all its runs (residual's `sched=cosine`, NAS's budgets),
      which may also replace a value above.
    """
    values: Dict[str, Any] = {}
    if isinstance(study, SeededStudyConfig):
        values.update(epochs=study.epochs, subset=study.subset)
    values.update({"batch_size": study.batch_size, "lr": study.lr, "monitor.figure": False})
    values.update(group_overrides(study, {g: CHOICE_FIELDS[g] for g in STUDY_GROUPS if hasattr(study, g)}))
    values.update(own or {})
    return values


def train_overrides(
    study: StudyConfig,
    values: Dict[str, Any],
    own_keys: Optional[Dict[str, str]] = None,
    needs: Optional[Dict[str, str]] = None,
    extra: Optional[Sequence[str]] = None,
) -> List[str]:
    """The `deepexp train` overrides of one run: the study's `values` ({train key: Python value}, from
    base_overrides and the run's own), each written by `hydra_override` (so paths with `=`, spaces, commas,
    brackets or quotes stay one value), then the user's `extra` overrides as given (default: the study's
    `overrides=[...]`).

    Raises:
        ConfigError: an extra override that check_extra refuses (a key in `values`, `own_keys` or `needs`).
    """
    extra = study.overrides if extra is None else extra
    check_extra(study, [*values, *(own_keys or {})], extra, "overrides", own_keys, needs)
    return hydra_overrides(values) + list(extra)


def check_extra(
    study: Any,
    keys: Iterable[str],
    extra: Sequence[str],
    option: str,
    own_keys: Optional[Dict[str, str]] = None,
    needs: Optional[Dict[str, str]] = None,
) -> None:
    """Refuse an extra override (`option=[...]`) that would make the study's tables, figures and report
    wrong, or that a run cannot take:

    - a key the study sets in its runs (`keys`): its report describes its own settings, and an epochs
      count or a seed changed behind them makes it wrong. `own_keys` names the study option to use
      instead where it is not the train key itself (`seed` -> `seeds=N`); a key the study also has
      (lr, dataset.path) is named as it is;
    - a key the study needs at the trainer's setting (`needs`: key -> what reads it), such as
      `eval_test` where the tables read every run's test accuracy;
    - a parent of such a key (`monitor={...}` sets monitor.enabled) or a config group whose choice sets
      one (`debug=fast` sets epochs and subset);
    - the choice field of a group the study chooses (`act.name=gelu` where the study sets `act`);
    - the choice field of any other group (`optim.name=adam`: choose `optim=adam`, config.check_choice_field);
    - a Hydra setting (`hydra.*`, `hydra/...`), which belongs to the whole command, not to each run;
    - a line Hydra cannot parse.

    Raises:
        ConfigError: the first such override, in one line.
    """
    keys, needs = list(keys), needs or {}
    owned = list(dict.fromkeys([*keys, *needs]))
    choice_of = {f"{group}.{CHOICE_FIELDS[group]}": group for group in owned if group in CHOICE_FIELDS}
    owned += list(choice_of)
    for line in extra:
        parsed = parse_extra(line, option)
        key = parsed.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(
                f"{option}=[...]: {line!r} is a Hydra setting, which applies to the whole command, not to "
                f"each run: give it on the command line itself"
            )
        value = None if parsed.is_delete() or parsed.is_sweep_override() else parsed.value()
        sets = [f"{key}.{k}" for k in flat_keys(value)] if isinstance(value, dict) and value else [key]
        hit = next(filter(None, (owned_key(k, owned) for k in [*sets, *group_sets(line, key)])), None)
        if hit is None:
            try:
                check_choice_field(line)
            except ConfigError as exc:
                raise ConfigError(f"{option}=[...]: {exc}") from None
            continue
        if hit in needs and hit not in keys:
            raise ConfigError(f"{option}=[...]: {line!r} sets {hit}, which the study needs as the trainer sets it: {needs[hit]}")
        named = choice_of.get(hit, hit)  # `act.name` is the study's `act`
        instead = (own_keys or {}).get(named) or (f"{named}=..." if has_key(study, named) else None)
        advice = f"use the study's own {instead} instead" if instead else "the study does not let it change"
        raise ConfigError(f"{option}=[...]: {line!r} sets {hit}, which the study sets itself in every run; {advice}")


def parse_extra(line: str, option: str) -> Any:
    """One element of a study's list of overrides as Hydra's parser reads it (an Override).
    Raises ConfigError, naming the option, for a line Hydra cannot parse."""
    from hydra.errors import HydraException

    try:
        return override_parser().parse_override(line)
    except HydraException as exc:
        raise ConfigError(f"{option}=[...]: {unparsable(line, first_line(exc))}") from None


def owned_key(key: str, owned: Sequence[str]) -> Optional[str]:
    """The owned key that setting `key` sets: `key` itself, or the first owned key below it (`~monitor`
    deletes monitor.figure); None when there is none."""
    return key if key in owned else next((o for o in owned if o.startswith(key + ".")), None)


@functools.lru_cache(maxsize=256)
def group_sets(line: str, key: str) -> Tuple[str, ...]:
    """The train keys a config-group choice changes (`debug=fast`: epochs, subset, monitor.every_n_steps),
    found by composing the default train config with and without it; () for a key that is no config group,
    or a line that does not compose (its run's composition then says why)."""
    if not config_choices(key.split("@")[0]):
        return ()
    try:
        before, after = (flat_keys(OmegaConf.to_container(compose_config("train", lines))) for lines in ([], [line]))
    except Exception:
        return ()
    return tuple(k for k in sorted(set(before) | set(after)) if before.get(k, _ABSENT) != after.get(k, _ABSENT))


_ABSENT = object()


def flat_keys(node: Any, prefix: str = "") -> Dict[str, Any]:
    """{dotted key: leaf value} of a nested dict; a group's `name` also counts as the group's key (`act`)."""
    out: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            if "name" in v:
                out[f"{prefix}{k}"] = v["name"]
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
        ConfigError: a line Hydra cannot parse, or one that is not a plain `key=value` (a sweep, `+key`, `~key`).
    """
    pairs: Dict[str, Any] = {}
    for line in lines:
        parsed = parse_extra(line, option)
        if parsed.is_sweep_override() or parsed.is_add() or parsed.is_force_add() or parsed.is_delete():
            raise ConfigError(f"{option}: {line!r} must be a plain key=value override")
        pairs[parsed.key_or_group] = parsed.value()
    return pairs


# --- what a study checks before anything is written -----------------------------------------


@functools.lru_cache(maxsize=1024)
def _run_config(overrides: Tuple[str, ...]) -> Any:
    return compose_train(overrides)


def run_config(overrides: Sequence[str]) -> Any:
    """The validated `deepexp train` config of one run's overrides (config.compose_train; a TrainConfig of
    its own: callers may change it), composed once per process: the checks before the folder is written,
    and the study after them, read the same runs. Raises ConfigError (or Hydra's error) for overrides that
    do not compose."""
    return copy.deepcopy(_run_config(tuple(overrides)))


def check_study(study: Any, plan: Callable[[Any], List["RunSpec"]], exp_dir: Optional[Path]) -> None:
    """Everything a study (activations, residual, efficient) would refuse beyond its validated config
    `study`, checked before anything is written: the extra overrides of its runs (`plan` refuses the keys
    the study sets or needs), one run of each kind composed and validated (`representatives`), and every
    run already in `exp_dir` against the config it would now get (check_runs).

    Raises:
        ConfigError: the first of these that fails, in one line.
    """
    specs = plan(study)
    for spec in representatives(specs):
        run_config(spec.overrides)
    if exp_dir is not None:
        check_runs(exp_dir, [(spec.name, spec.overrides) for spec in specs])


def representatives(specs: Sequence["RunSpec"]) -> List["RunSpec"]:
    """One spec per kind of run: runs that set the same keys with the same model compose to the same
    schema, and the study's own values are checked by the study's schema; seeds and activations,
    for one, need no composition each."""
    kinds: Dict[tuple, RunSpec] = {}
    for spec in specs:
        kind = tuple(line if line.startswith("model=") else line.partition("=")[0] for line in spec.overrides)
        kinds.setdefault(kind, spec)
    return list(kinds.values())


def check_runs(exp_dir: Path, runs: Iterable[Tuple[str, Sequence[str]]]) -> None:
    """Refuse, as the trainer would when it reaches them, the runs already in `<exp_dir>/runs/<name>/`
    whose recorded config differs from the one their overrides now give (`train.check_resumable`:
    a changed lr, epochs or model is refused; device, monitoring and the like may change).

    Raises:
        CheckpointError: the first such run, naming it and what changed.
    """
    from ..rundir import read_metrics

    for name, overrides in runs:
        run_dir = exp_dir / "runs" / name
        earlier = read_metrics(run_dir)
        if earlier:
            from ..train import check_resumable, flat_config  # (imports torch: only when there is a run to check)

            check_resumable(earlier.get("config", {}), flat_config(run_config(overrides)), run_dir, fresh_folder_advice())


_checking_sweep_jobs = False  # set by checking_sweep_jobs(): the CLI checks a sweep's jobs before Hydra runs them


@contextlib.contextmanager
def checking_sweep_jobs():
    """While the CLI checks the jobs of a -m sweep before Hydra starts it, advice names the sweep's keys."""
    global _checking_sweep_jobs
    _checking_sweep_jobs = True
    try:
        yield
    finally:
        _checking_sweep_jobs = False


def fresh_folder_advice() -> str:
    """How to start afresh instead of continuing a folder that holds another run: choose another run folder,
    or in a -m sweep another sweep folder, or a hydra.sweep.subdir that gives every job its own."""
    if _checking_sweep_jobs or (HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"):
        return "give every job its own folder (a hydra.sweep.subdir that differs between jobs) or choose a new hydra.sweep.dir"
    return "choose a new hydra.run.dir to start afresh"


def on_command_line(key: str) -> bool:
    """Whether the command line set `key` (Hydra's task overrides: `n_workers=2`, `+key=...`); outside a
    Hydra app (a study called from Python) every value counts as chosen by the caller."""
    if not HydraConfig.initialized():
        return True
    return any(parse_key(line) == key for line in HydraConfig.get().overrides.task)


def experiment_dir() -> Path:
    """The folder Hydra made for this command (`hydra.run.dir=PATH` to choose it)."""
    return job_output_dir()


def study_console() -> Console:
    """Rich output, user text printed as given (`plain_console`); logs and pipes get room for the whole summary table.
    Lines that hold a path are printed with soft_wrap=True (the terminal wraps them, nothing is cut or broken by rich)."""
    console = plain_console()
    return console if console.is_terminal else plain_console(width=200)


def preset_note(preset: str) -> List[str]:
    """The report's first limitation for a study run with `preset=quick` (none for another preset): its
    numbers are a first look, sized for a 2-core CPU, not the study's result."""
    if preset != "quick":
        return []
    return [
        "Quick results are a first look (`preset=quick`: less data, fewer epochs and seeds, sized for a 2-core CPU): "
        "they show that the study runs and which way its effects lean, not how large they are. "
        "Run the study without `preset=quick` for the results to report."
    ]


@dataclass
class RunSpec:
    name: str  # folder under runs/
    labels: Dict[str, Any]  # what distinguishes this run in the tables (variant, act, seed, ...)
    overrides: List[str] = field(default_factory=list)  # `deepexp train` overrides


def run_all(
    specs: List[RunSpec], exp_dir: Path, console: Console, command: str, n_workers: int = 1, n_workers_given: bool = True
) -> List[Tuple[RunSpec, dict]]:
    """Train every spec (or pick up its finished result), `n_workers` at a time in separate processes
    that share the CPU threads, on CUDA worker i on GPU i mod count (run_in_worker); with one GPU and
    `n_workers` not `n_workers_given` on the command line, one at a time (parallel.worker_plan, which
    prints why). Returns (spec, metrics) pairs in order."""
    configs = [run_config(spec.overrides) for spec in specs]  # all bad input before any work
    if configs:
        n_workers, note = worker_plan(configs[0].device.type, configs[0].device.index, n_workers, n_workers_given)
        if note:
            console.print(note, highlight=False, markup=False)
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

    def attempts() -> Iterator[dict]:  # each run's process, then the processes it resumed after
        for m in runs:
            prov = m.get("provenance") or {}
            yield prov
            yield from prov.get("earlier_attempts", [])

    return ", ".join(map(str, distinct(attempt.get(key) for attempt in attempts()))) or "?"


def distinct(values: Iterable[Any]) -> List[Any]:
    """The values other than None, each once, in order of first appearance (unhashable ones too: lists)."""
    out: List[Any] = []
    for value in values:
        if value is not None and value not in out:
            out.append(value)
    return out


# --- how the runs trained, as every study's Setup says it ------------------------------------------------

OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}  # optim choice -> the name papers use


def optimizer_phrase(config: Dict[str, Any]) -> str:
    """The optimizer and its own settings from a run's flat `config` (train.flat_config: `optim` names the choice,
    `optim.momentum`, `optim.nesterov`, `optim.betas` its fields): `SGD momentum 0.9`, `SGD momentum 0.9 (Nesterov)`,
    `SGD without momentum`, `Adam betas (0.9, 0.999)`, `AdamW betas (0.9, 0.999)`; `?` where the run recorded none."""
    name = config.get("optim", config.get("optim.name"))
    if name is None:
        return "?"
    text = OPTIMIZER_NAMES.get(str(name), str(name))
    if name == "sgd" and "optim.momentum" in config:
        momentum = config["optim.momentum"]
        text += f" momentum {momentum:g}" if momentum else " without momentum"
        text += " (Nesterov)" if config.get("optim.nesterov") else ""
    elif config.get("optim.betas"):
        text += f" betas ({', '.join(f'{b:g}' for b in config['optim.betas'])})"
    return text


def schedule_phrase(config: Dict[str, Any]) -> Optional[str]:
    """The learning-rate schedule from a run's flat `config` (`sched` and its fields, as train.lr_factor applies
    them): `cosine schedule`, `cosine schedule down to 0.1 × lr`, `step schedule (× 0.1 every 30 epochs)`, each with
    `after a 1-epoch linear warm-up` where sched.warmup_epochs > 0, or the warm-up alone for a constant lr;
    None for a constant lr without warm-up (`sched=none`, or no schedule recorded)."""
    name = config.get("sched", config.get("sched.name"))
    warmup = config.get("sched.warmup_epochs") or 0
    text = None
    if name == "cosine":
        floor = config.get("sched.min_lr_factor") or 0
        text = "cosine schedule" + (f" down to {floor:g} × lr" if floor else "")
    elif name == "step":
        text = f"step schedule (× {config.get('sched.gamma', '?')} every {config.get('sched.step_size', '?')} epochs)"
    elif name not in (None, "none"):
        text = f"{name} schedule"
    if warmup:
        text = f"{text} after a {warmup:g}-epoch linear warm-up" if text else f"{warmup:g}-epoch linear warm-up"
    return text


def batch_phrase(m: dict) -> Optional[str]:
    """The batch size a run trained with: its `data.batch_size_used` (the trainer caps batch_size at the training
    set), naming the configured batch_size where that was larger; the configured one where no use was recorded."""
    config, used = m.get("config") or {}, (m.get("data") or {}).get("batch_size_used")
    asked = config.get("batch_size")
    if used is None:
        return None if asked is None else str(asked)
    return str(used) + (f" (batch_size {asked} capped at the training set)" if asked is not None and asked != used else "")


def _setting(key: str, label: str) -> Callable[[dict], Optional[str]]:
    """The phrase `<label> <value>` of a run's numeric config `key`, None where it is unset or 0 (not applied)."""
    return lambda m: f"{label} {m['config'][key]}" if (m.get("config") or {}).get(key) else None


# The aspects of training a Setup states, in its order: (the phrase of one run's metrics dict, what a run without the
# aspect reads where runs differ in it). A phrase is None where the run has none of it (no weight decay, no clipping).
TRAINING_ASPECTS: Tuple[Tuple[Callable[[dict], Optional[str]], str], ...] = (
    (lambda m: None if batch_phrase(m) is None else f"batch {batch_phrase(m)}", "batch ?"),
    (lambda m: optimizer_phrase(m.get("config") or {}), "?"),
    (lambda m: None if (m.get("config") or {}).get("lr") is None else f"lr {m['config']['lr']}", "lr ?"),
    (lambda m: schedule_phrase(m.get("config") or {}), "constant lr"),
    (_setting("weight_decay", "weight decay"), "no weight decay"),
    (_setting("grad_clip", "gradient clipping at norm"), "no gradient clipping"),
    (_setting("label_smoothing", "label smoothing"), "no label smoothing"),
)
LR, SCHEDULE = 2, 3  # positions in TRAINING_ASPECTS: a shared schedule is said with its shared lr


def training_description(runs: Iterable[dict]) -> str:
    """How the metrics dicts `runs` trained, from what each recorded (its flat `config` and `data.batch_size_used`),
    for a study's Setup: the batch, the optimizer and its settings, lr and its schedule (with warm-up), and weight
    decay, gradient clipping and label smoothing where set, e.g. `batch 64, SGD momentum 0.9, lr 0.1 with a cosine
    schedule, weight decay 0.0001`. Aspects in which the runs differ are listed last, each value with its count of
    runs: `... (varies between runs: lr 0.1 in 8 runs, lr 0.01 in 4; weight decay 0.0001 in 8 runs, no weight
    decay in 4)`. Runs without a recorded config are left out; none at all reads `training settings not recorded`."""
    runs = [m for m in runs if m.get("config")]
    if not runs:
        return "training settings not recorded"
    shared: Dict[int, Optional[str]] = {}
    varying: List[str] = []
    for i, (phrase, absent) in enumerate(TRAINING_ASPECTS):
        counts: Dict[str, int] = {}
        for m in runs:
            value = phrase(m) or absent
            counts[value] = counts.get(value, 0) + 1
        if len(counts) == 1:
            shared[i] = phrase(runs[0])
        else:
            varying.append(", ".join(f"{v} in {n}" + (f" run{'s' if n > 1 else ''}" if j == 0 else "") for j, (v, n) in enumerate(counts.items())))
    if shared.get(LR) and shared.get(SCHEDULE):
        shared[LR], shared[SCHEDULE] = f"{shared[LR]} with a {shared[SCHEDULE]}", None
    parts = [text for _, text in sorted(shared.items()) if text]
    return ", ".join(parts) + (f" (varies between runs: {'; '.join(varying)})" if varying else "")


def overrides_phrase(overrides: Sequence[str]) -> str:
    """What a study's Setup adds to its training sentence for the user's `overrides=[...]`, which every run got
    after the study's own settings: `; every run with overrides=['optim=adam']`, or "" where there are none."""
    return f"; every run with overrides={list(overrides)}" if overrides else ""


def recorded_values(runs: Iterable[dict], key: str) -> str:
    """The distinct values of `data.<key>` (what the trainer used: `probe_size_used`, `batch_size_used`) over the
    metrics dicts `runs`, in order of first appearance: `256`, or `50 or 256 (varies between runs)`; `?` where
    no run recorded it."""
    values = distinct((m.get("data") or {}).get(key) for m in runs)
    if not values:
        return "?"
    return " or ".join(map(str, values)) + (" (varies between runs)" if len(values) > 1 else "")


# What a run's provenance says about where, with what and in which precision it trained (amp_dtype and tf32 as the
# trainer records them; matmul_precision as torch.get_float32_matmul_precision() names it, if recorded).
HARDWARE_KEYS = ("host", "device", "gpu", "threads", "amp_dtype", "tf32", "matmul_precision", "torch")
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}


def hardware_record(m: dict) -> dict:
    """The part of a run's metrics dict that `hardware_line` reads (HARDWARE_KEYS of its provenance and of
    every earlier process of a resumed run, and its `amp` setting): small enough to keep beside a NAS trial
    in the search's storage."""
    prov, config = m.get("provenance") or {}, m.get("config") or {}
    keep = lambda attempt: {k: attempt[k] for k in HARDWARE_KEYS if k in attempt}
    return {
        "provenance": {**keep(prov), "earlier_attempts": [keep(a) for a in prov.get("earlier_attempts", [])]},
        "config": {"amp": config["amp"]} if "amp" in config else {},
    }


def precision(attempt: dict, config: dict) -> str:
    """The arithmetic one process of a run trained in, from its provenance `attempt` and the run's `config`:
    `fp32`, `TF32` (float32 matmuls and convolutions on TF32 tensor cores), `amp bf16`, `amp fp16`, or an amp
    one `+ TF32`; what a CUDA run did not record (the amp dtype, TF32 use) is named; `?` without a device."""
    device = str(attempt.get("device") or "")
    if not device:
        return "?"
    on_cuda, unknown = device.startswith("cuda"), []
    if "amp_dtype" in attempt:  # the trainer records None for float32 throughout
        dtype = attempt["amp_dtype"]
        base = f"amp {DTYPE_NAMES.get(str(dtype).removeprefix('torch.'), dtype)}" if dtype else "fp32"
    elif config.get("amp") and on_cuda:
        base = "amp"
        unknown.append("dtype")
    else:
        base = "fp32"
    tf32 = attempt.get("tf32")
    if tf32 is None and attempt.get("matmul_precision") is not None:
        tf32 = attempt["matmul_precision"] != "highest"  # "high" and "medium" let float32 matmuls use TF32 (or bf16)
    if on_cuda and tf32:
        base = "TF32" if base == "fp32" else f"{base} + TF32"
    elif on_cuda and tf32 is None:
        unknown.append("TF32 use")
    return base + (f" ({' and '.join(unknown)} not recorded)" if unknown else "")


def hardware_line(runs: Iterable[dict]) -> str:
    """Where and in which precision the metrics dicts `runs` trained, for a report's Setup: one entry per
    kind of process (device type and GPU model, precision, CPU threads), the devices of each listed, and
    the number of runs per entry where there are several, e.g. `cuda:0, cuda:1 (NVIDIA H200), amp bf16,
    8 CPU threads` or `cpu, fp32, 2 CPU threads (6 runs); cuda:0 (NVIDIA A100), TF32, 4 CPU threads (2 runs)`.
    Every process of a resumed run counts (`earlier_attempts`); a run that recorded no device reads
    `device not recorded`."""
    kinds: Dict[tuple, Dict[str, Any]] = {}
    for i, m in enumerate(runs):
        prov, config = m.get("provenance") or {}, m.get("config") or {}
        for attempt in (prov, *prov.get("earlier_attempts", [])):
            device = str(attempt.get("device") or "")
            key = (device.split(":")[0], attempt.get("gpu"), precision(attempt, config), attempt.get("threads"))
            kind = kinds.setdefault(key, {"devices": [], "runs": set()})
            kind["runs"].add(i)
            if device not in kind["devices"]:
                kind["devices"].append(device)
    if not kinds:
        return "no runs"
    out = []
    for (device_type, gpu, prec, threads), kind in kinds.items():
        if not device_type:
            text = "device not recorded"
        else:
            text = (
                ", ".join(sorted(kind["devices"]))
                + (f" ({gpu})" if gpu else "")
                + f", {prec}, {threads or '?'} CPU thread"
                + ("" if threads == 1 else "s")
            )
        n = len(kind["runs"])
        out.append(text + (f" ({n} run{'s' if n > 1 else ''})" if len(kinds) > 1 else ""))
    return "; ".join(out)


def start_worker_device(index: Optional[int], deterministic: bool) -> None:
    """Prepare a study's worker process for its runs: for deterministic=true, cuBLAS's workspace setting
    (train.fix_cublas_workspace) before anything of CUDA starts; then GPU `index`, if any, as the process's
    current GPU, so that nothing of its runs lands on cuda:0 (torch.cuda.set_device)."""
    from ..train import fix_cublas_workspace  # here, not at the top: `deepexp report` uses this module without torch

    warning = fix_cublas_workspace(deterministic)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if index is not None:
        import torch

        torch.cuda.set_device(index)


def run_in_worker(spec: RunSpec, cfg: Any, exp_dir: Path, command: str, counter: str) -> dict:
    """run_one in a worker process of map_in_processes (which has its own console). On CUDA the run trains
    on this worker's GPU, parallel.worker_device (worker i: GPU i mod count, or the GPU device.index names),
    which becomes this process's current GPU and, as `device.index=N`, part of the run's config and overrides."""
    index = worker_device(cfg.device.type, cfg.device.index, worker_slot())
    start_worker_device(index, cfg.deterministic)
    if index is not None:
        if cfg.device.index is None:
            cfg.device.index = index
            spec = replace(spec, overrides=[*spec.overrides, hydra_override("device.index", index)])
    return run_one(spec, cfg, exp_dir, study_console(), command, counter)


def run_one(spec: RunSpec, cfg: Any, exp_dir: Path, console: Console, command: str, counter: str) -> dict:
    """Train one run in `<exp_dir>/runs/<spec.name>` (or pick up its result) and print one line about it."""
    from ..train import train  # here, not at the top: `deepexp report` uses this module without torch

    start = time.perf_counter()
    result = train(
        cfg,
        exp_dir / "runs" / spec.name,
        QuietReporter(label=spec.name),
        provenance={"command": command, "overrides": spec.overrides, "labels": spec.labels},
    )
    m = result.metrics
    if m["status"] != "completed":
        outcome = f"diverged at step {m.get('diverged_at_step')}"
    elif m.get("test"):
        outcome = f"test acc {m['test']['acc']:.4f}"
    else:  # eval_test=false
        outcome = f"best val acc {m['best_val_acc']:.4f}"
    console.print(f"[{counter}] {spec.name}: {m['status']}, {outcome} ({time.perf_counter() - start:.1f} s)", highlight=False, markup=False)
    return m

"""`deepexp <command> [overrides]`: dispatch to the Hydra app of that command.

Each command is `configs/<command>.yaml` plus a task function. Bad input of any
kind (unknown command, group choice or key, wrong type, impossible value, missing
data) ends with one line on stderr and exit code 2; a diverged run with 3
(docs/formats.md, "Exit statuses"). `HYDRA_FULL_ERROR=1` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import EXIT_BAD_INPUT, ConfigError, DeepexpError, fail

_show_traceback = False  # the user's HYDRA_FULL_ERROR, before we set it for Hydra
HYDRA_FLAGS_WITHOUT_RUN = ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc")  # print, check nothing
HYDRA_CFG_FLAGS = ("--cfg", "-c")  # print the config: checked as a run would be, but nothing is written
MULTIRUN_FLAGS = ("-m", "--multirun")  # a sweep: one job per value, in any position on deepexp's command line
HYDRA_FLAGS_WITH_VALUE = (
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)  # `--cfg job`: the next word is the flag's, not an override


@dataclass(frozen=True)
class Command:
    summary: str
    task: str  # "module:function" under deepexp, imported only when the command runs (a fast --help)
    presets: bool = False  # `preset=X` picks configs/<command>/preset/X.yaml
    # "module:function" (validated config, output folder or None) -> None, raising ConfigError for what the
    # command would refuse beyond its schema: a study's runs, and what is already in the folder.
    check: Optional[str] = None

    def run(self, cfg) -> int:
        """Import the task function and run it on one composed config; returns an exit code."""
        return _function(self.task)(cfg)

    def check_config(self, typed, folder: Optional[Path]) -> None:
        """Refuse (ConfigError) what the command would refuse on its validated config `typed` in `folder`
        (None: not known yet), before anything is written: before Hydra starts, and again in the job once
        it holds the folder's lock, before the `.hydra/` record is written."""
        if self.check:
            _function(self.check)(typed, folder)


def _function(name: str):
    module, function = name.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), function)


COMMANDS: Dict[str, Command] = {
    "train": Command(
        "train one model with per-layer monitoring (TensorBoard, metrics.json, checkpoints)",
        "commands.train:train_command",
        check="commands.train:check_command",
    ),
    "activations": Command(
        "project 1: the activation-function study (9 activations x seeds, diagnosis, report)",
        "experiments.activations:activations_command",
        presets=True,
        check="experiments.activations:check_command",
    ),
    "residual": Command(
        "project 2: plain vs residual networks, shortcuts, dense connections, gradient flow",
        "experiments.residual:residual_command",
        presets=True,
        check="experiments.residual:check_command",
    ),
    "efficient": Command(
        "project 3: baseline CNN vs efficient designs: params, MACs, latency, accuracy, INT8, ONNX",
        "experiments.efficient:efficient_command",
        presets=True,
        check="experiments.efficient:check_command",
    ),
    "nas": Command(
        "project 4: architecture search (random, evolution, NSGA-II, zero-cost), Pareto front, top 5",
        "experiments.nas:nas_command",
        presets=True,
        check="experiments.nas:check_command",
    ),
    "report": Command(
        "summarise any folder of runs: group over seeds, mean ± std, curves, bars, report.md", "commands.report:report_command"
    ),  # its check reads the runs: in check_inputs
}


def usage() -> str:
    lines = ["usage: deepexp <command> [key=value ...] [-m for a sweep]", "", "commands:"]
    lines += [f"  {name:<12} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += [
        "",
        "`deepexp <command> --help` shows that command's config groups, choices and defaults.",
        "Example: deepexp train model=resnet18 act=gelu dataset=cifar10 device=auto",
    ]
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> None:
    sys.exit(run(list(sys.argv[1:] if argv is None else argv)))


def run(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        return fail(f"unknown command {name!r}; commands: {', '.join(COMMANDS)} (see deepexp --help)")
    global _show_traceback
    show_traceback = _show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    args = hydra_args(name, args)
    # Hydra re-raises instead of printing its own multi-line report; we print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        record = None
        flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}  # (also `--cfg=job`)
        if not flags & set(HYDRA_FLAGS_WITHOUT_RUN):
            args = resolve_resume(name, args)
            refuse_choice_fields(args)
            args = add_and_delete(name, args)
            typed = prevalidate(name, args)
            if not flags & set(HYDRA_CFG_FLAGS):
                check_inputs(name, typed, args)
                args, record = record_after_lock(args)
                args += [SWEEP_LOCK] if is_multirun(args) else []
        return launch(name, args, record)
    except DeepexpError as exc:
        if show_traceback:
            raise
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted; run the same command on the same run directory (or add resume=true) to continue", 130)
    except Exception as exc:  # Hydra / OmegaConf composition errors, or a bug
        if show_traceback:
            raise
        message, code = describe(exc)
        return fail(message, code)


def hydra_args(name: str, args: List[str]) -> List[str]:
    """The command line as Hydra's overrides: deepexp's short spellings written out, and `-m`/`--multirun`
    moved to the front (Hydra's argument parser takes it only before the overrides)."""
    flags, rest, skip = [], [], False
    for a in args:
        (flags if not skip and a in MULTIRUN_FLAGS else rest).append(a)
        skip = not skip and a in HYDRA_FLAGS_WITH_VALUE  # `-cn NAME`: the word after it is the flag's
    args = [*flags, *rest]
    if COMMANDS[name].presets:  # every study spells it `preset=quick`; Hydra's group is per command
        args = [f"{name}/{a}" if a.startswith("preset=") else a for a in args]
    if name == "train":  # `model=nas arch=PATH`, as the course writes it, is the model's own key
        args = [f"model.{a}" if a.startswith("arch=") else a for a in args]
    return args


def launch(name: str, args: List[str], record: Optional["HydraRecord"] = None) -> int:
    """Run the command's Hydra app on `args`; returns the exit code.

    Each job takes its output folder's RunLock before anything is written there, checks what the
    command would refuse in that folder (Command.check_config), then writes Hydra's `.hydra/` record
    itself (`record`, see record_after_lock; not over the record of a finished run, which the task does
    not run again), then runs the task. A second process on the same folder,
    or a job refused there, leaves the folder's record as it was; likewise a second sweep into a sweep
    folder in use (hydra_callbacks.SweepLock, which a sweep gets as the override SWEEP_LOCK)."""
    import hydra

    from .config import CONFIG_DIR, job_output_dir, register_schemas, validate

    register_schemas()
    codes: List[int] = []
    command = COMMANDS[name]

    def task(cfg) -> int:
        # Under a launcher that runs jobs in other processes (joblib, submitit), `codes` stays
        # empty here; each job's outcome is in its metrics.json (`deepexp report` counts them).
        from .rundir import FINISHED, RunLock, read_metrics

        try:
            folder = job_output_dir()
            with RunLock(folder):
                command.check_config(validate(cfg), folder)
                # A finished run is not run again: its record stays the one of the command that ran it.
                if record is not None and (read_metrics(folder) or {}).get("status") not in FINISHED:
                    record.write(cfg)
                codes.append(command.run(cfg))
            return codes[-1]
        except Exception as exc:
            # SystemExit passes through Hydra's job runner untouched (it catches Exception only),
            # which keeps Hydra from adding its own multi-line report. A Hydra or OmegaConf error
            # here comes from a study composing its runs' configs.
            if _show_traceback:
                raise
            message, code = (str(exc), exc.exit_code) if isinstance(exc, DeepexpError) else describe(exc)
            sys.exit(fail(message, code))

    app = hydra.main(config_path=str(CONFIG_DIR), config_name=name, version_base="1.3")(task)
    saved_argv = sys.argv
    sys.argv = [f"deepexp {name}", *args]
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        from .hydra_callbacks import SweepLock

        SweepLock.release_all()
    return max(codes, default=0)


# deepexp's own Hydra override of a -m sweep: the callback that locks the sweep folder (left out of each job's record).
SWEEP_LOCK = "+hydra.callbacks.deepexp_sweep_lock._target_=deepexp.hydra_callbacks.SweepLock"


HYDRA_RECORD = ".hydra"  # Hydra's default hydra.output_subdir
NO_HYDRA_RECORD = "hydra.output_subdir=null"


@dataclass(frozen=True)
class HydraRecord:
    """Hydra's `.hydra/` record (config.yaml, hydra.yaml, overrides.yaml), written by the task once it
    holds the run's lock instead of by Hydra before the task starts (Hydra's core/utils.py run_job
    writes it before any callback or task could refuse the folder)."""

    subdir: str  # the folder under the job's output folder (hydra.output_subdir)
    user_lines: Tuple[str, ...]  # the user's own hydra.output_subdir=... overrides, each replaced by NO_HYDRA_RECORD

    def write(self, cfg) -> None:
        """The three files as Hydra writes them (same YAML), atomically, with the hydra overrides as the user gave them.
        Raises ConfigError when the folder cannot be written."""
        import copy

        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf, open_dict, read_write

        from .config import job_output_dir
        from .rundir import atomic_write

        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
        users = iter(self.user_lines)
        # The overrides as text: `hydra.run.dir=/x/${act.name}` is an interpolation of the job's config, which
        # this copy of Hydra's node does not hold (Hydra's own record saves them unresolved too).
        lines = OmegaConf.to_container(hydra_cfg.hydra.overrides.hydra, resolve=False)
        with read_write(hydra_cfg.hydra), open_dict(hydra_cfg.hydra):  # HydraConfig keeps its node read-only
            hydra_cfg.hydra.output_subdir = self.subdir
            given = [next(users, None) if o == NO_HYDRA_RECORD else o for o in lines if o != SWEEP_LOCK]
            hydra_cfg.hydra.overrides.hydra = [o for o in given if o is not None]
        folder = job_output_dir() / self.subdir
        for file, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
            text = OmegaConf.to_yaml(node)
            atomic_write(folder / file, lambda f, text=text: f.write(text), mode="w")


def record_after_lock(args: List[str]) -> Tuple[List[str], Optional[HydraRecord]]:
    """Tell Hydra not to write its record (`hydra.output_subdir=null`, in place of the user's own
    hydra.output_subdir overrides) and return what the task should write once it holds the lock
    (None when the user's last hydra.output_subdir is null: no record)."""
    from .config import parse_key, parse_value

    user_lines = tuple(a for a in overrides_in(args) if parse_key(a) == "hydra.output_subdir")
    if not user_lines:
        return [*args, NO_HYDRA_RECORD], HydraRecord(HYDRA_RECORD, ())
    subdir = parse_value(user_lines[-1])  # Hydra: the last one wins
    args = [NO_HYDRA_RECORD if a in user_lines else a for a in args]
    return args, (HydraRecord(str(subdir), user_lines) if subdir is not None else None)


def last_value(args: List[str], key: str, default: Any = None) -> Any:
    """The value the last override of `key` in `args` gives it (Hydra: the last one wins), else `default`."""
    from .config import parse_key, parse_value

    lines = [a for a in overrides_in(args) if parse_key(a) == key]
    return parse_value(lines[-1]) if lines else default


def overrides_in(args: List[str]) -> List[str]:
    """The overrides of a command line: Hydra's flags left out, and the word after a flag that takes one
    (`--cfg job`, `-cn NAME`)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in HYDRA_FLAGS_WITH_VALUE
        else:
            out.append(a)
    return out


def given_folder(args: List[str], key: str = "hydra.run.dir") -> Optional[Path]:
    """The folder the command line names with `key`, as Hydra will read it (OmegaConf's `\\${` escapes
    resolved), or None: not given, or an interpolation only the running app can resolve (then the job
    checks its folder itself, once it holds the folder's lock)."""
    from .config import literal_text

    value = last_value(args, key)
    text = literal_text(str(value)) if value is not None else None
    return Path(text) if text else None


# --- before Hydra starts: resume=true and validation ---------------------------------------


def resolve_resume(name: str, args: List[str]) -> List[str]:
    """`deepexp train resume=true`: continue a run with the overrides it was started with.

    The run is the one `hydra.run.dir=DIR` names, else the newest unfinished run under outputs/train/
    (then added as hydra.run.dir). Its recorded overrides (recorded_overrides) come first and those of
    the command line after them, so that the command line wins, and a change there is checked for
    resumability like any other; a recorded override of a key the command line sets is left out.
    Prints which run continues and with which recorded overrides.

    Raises:
        ConfigError: no unfinished run under outputs/train/ to continue, or no run in the folder named.
    """
    if name != "train" or is_multirun(args) or last_value(args, "resume") is not True:
        return args
    from .config import hydra_override, parse_key, shell_word
    from .rundir import read_metrics

    folder = given_folder(args)
    if folder is None and last_value(args, "hydra.run.dir") is not None:
        return args  # an interpolated folder: the job compares its config with the run there
    if folder is None:
        candidates = sorted(Path("outputs", name).glob("**/metrics.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        folder = next((p.parent for p in candidates if (read_metrics(p.parent) or {}).get("status") == "running"), None)
        if folder is None:
            raise ConfigError(f"resume=true: no unfinished run under {Path('outputs', name)}; pass hydra.run.dir=DIR of the run to continue")
        args = [*args, hydra_override("hydra.run.dir", str(folder))]
    elif read_metrics(folder) is None:
        raise ConfigError(f"resume=true: {folder} holds no run to continue; leave out resume=true to start a new run there")
    given = {parse_key(a) for a in overrides_in(args)} | {"resume"}
    kept = [line for line in recorded_overrides(folder) if parse_key(line) not in given]
    print(f"resume=true: continuing {folder}" + (f" ({' '.join(map(shell_word, kept))})" if kept else ""))
    return [*kept, *args]


def recorded_overrides(folder: Path) -> List[str]:
    """The overrides a run was started with, as Hydra got them: its `.hydra/overrides.yaml`, else (a run
    written with another hydra.output_subdir, or none) the `overrides` of its metrics.json provenance."""
    from omegaconf import ListConfig, OmegaConf

    from .rundir import read_metrics

    try:
        record = OmegaConf.load(folder / HYDRA_RECORD / "overrides.yaml")
    except Exception:  # missing or unreadable: the metrics' copy
        record = None
    if isinstance(record, ListConfig):
        return [str(line) for line in OmegaConf.to_container(record, resolve=False)]
    return [str(line) for line in ((read_metrics(folder) or {}).get("provenance") or {}).get("overrides") or []]


def refuse_choice_fields(args: List[str]) -> None:
    """Refuse (ConfigError, config.check_choice_field) a command-line override that sets a group's choice
    field (`optim.name=adam`) instead of choosing the group (`optim=adam`)."""
    from .config import check_choice_field

    for line in overrides_in(args):
        check_choice_field(line)


def add_and_delete(name: str, args: List[str]) -> List[str]:
    """Hydra's `~key` and `+key=value` made to agree with the schemas, whatever a key's value.

    Hydra takes a key whose value is null for an absent one: it cannot delete it (`~grad_clip`: "does not
    exist") and lets `+grad_clip=1.0` add it, while `+lr=0.1` is refused. Here `~key` (or `~key=null`) of
    a key that may be null sets it to null, `~key` of a key a schema requires is refused, and `+key=value`
    of any key the config has is refused with the line to use instead. Other `~key` and `+key` lines
    (groups, unknown keys) go to Hydra as given.

    Raises:
        ConfigError: `+key=value` of a key the config already has; `~key` of a key its schema requires.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from .config import compose_config, config_choices, hydra_value, override_parser

    lines = [a for a in overrides_in(args) if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    special = {}
    for line in lines:
        try:
            o = override_parser().parse_override(line)
        except HydraException:
            continue  # prevalidate names it
        group = "/" in o.key_or_group or bool(config_choices(o.key_or_group))
        if (o.is_delete() or o.is_add()) and not (group or o.is_sweep_override()):
            special[line] = o
    if not special:
        return args
    try:
        base = compose_config(name, [line for line in lines if line not in special and "," not in line and "(" not in line])
    except Exception:
        return args  # prevalidate names what does not compose
    out = []
    for line in args:
        o = special.get(line)
        parent_key, _, leaf = o.key_or_group.rpartition(".") if o else ("", "", "")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        if o is None or not OmegaConf.is_dict(parent) or leaf not in parent:
            out.append(line)  # Hydra's own answer: an unknown key cannot be deleted, and may be added (the schema then refuses it)
        elif o.is_add():
            raise ConfigError(f"{line}: {o.key_or_group} is already in the config; set it without the +: {line[1:]}")
        elif parent._get_node(leaf)._is_optional():
            if o.value() not in (None, parent[leaf]):  # `~key=value`: Hydra removes a key only at that value
                raise ConfigError(f"{line}: {o.key_or_group} is {hydra_value(parent[leaf])}, not {hydra_value(o.value())}")
            out.append(f"{o.key_or_group}=null")
        elif parent_key and OmegaConf.get_type(parent) not in (None, dict):
            # a field of a group's schema (`~model.depth`), which OmegaConf cannot delete; a top-level key
            # (`~seed`) is deleted by Hydra and then named as required by validation
            raise ConfigError(f"{line}: {o.key_or_group} is required and cannot be removed; set it instead: {o.key_or_group}=...")
        else:
            out.append(line)
    return out


def prevalidate(name: str, args: List[str]) -> List[Any]:
    """Compose and validate before Hydra creates any run directory; returns the validated configs.

    For a sweep (`-m a=1,2 b=x,y`), each value of each swept key is checked with the
    other keys at their first value: every bad value is caught without composing the
    whole cartesian product. Each variant is checked as the command checks its config
    (Command.check_config: a study's owned keys, its runs' configs), and against what is
    already in the run folder when the command line names it: a run there that the command
    would refuse is refused here, before Hydra writes anything in that folder; likewise each job
    of a sweep rerun into a named sweep folder (existing_sweep_jobs), before Hydra rewrites its
    multirun.yaml.
    """
    from .config import compose_config, validate

    choices = sweep_choices(name, args)
    typed = [validate(compose_config(name, variant)) for variant in variants_of(choices)]
    folder = None if is_multirun(args) else given_folder(args)
    for one in typed:
        COMMANDS[name].check_config(one, folder)
    jobs = existing_sweep_jobs(args, choices)  # a rerun sweep: each job against the run in its folder, before multirun.yaml is rewritten
    if jobs:
        from .experiments.runner import checking_sweep_jobs

        with checking_sweep_jobs():
            for job_folder, overrides in jobs:
                COMMANDS[name].check_config(validate(compose_config(name, overrides)), job_folder)
    return typed


LOCAL_LAUNCHERS = (None, "basic", "joblib")  # launchers whose jobs run on this machine, with its files


def check_inputs(name: str, typed: List[Any], args: List[str]) -> None:
    """Refuse, before Hydra makes an output folder, what a job would refuse as soon as it started:
    a report's missing or empty folder or a group_by key no run has (commands.report.check_command),
    data that is neither on disk nor downloadable or that the trainer's data checks refuse
    (data.check_available), device=cuda without a GPU. (Downloads happen here, once, where they are
    allowed.) Jobs that another launcher runs elsewhere (a SLURM cluster) find their data and device
    there, so only the report is checked.

    `typed`: the validated config of each job variant (see sweep_variants).
    Raises: ConfigError (DataError for data) with the job's own one line.
    """
    from .config import compose_train, parse_key, to_plain

    if name == "report":
        from .commands.report import check_command

        for cfg in typed:
            check_command(cfg, None)
        return
    if last_value(args, "hydra/launcher") not in LOCAL_LAUNCHERS:
        return
    from .data import check_available

    checked = set()
    for cfg in typed:
        if name == "train":
            data = cfg.data
        else:  # a study's runs: the trainer's data options, as the study's extra overrides set them
            data = compose_train([line for line in cfg.overrides if (parse_key(line) or "").startswith("data.")]).data
        key = repr((to_plain(cfg.dataset), to_plain(data)))
        if key not in checked:
            checked.add(key)
            check_available(cfg.dataset, data)
        if cfg.device.type == "cuda":
            from .train import resolve_device  # (imports torch: only where a GPU is asked for)

            resolve_device(cfg.device.type)


def is_multirun(args: List[str]) -> bool:
    """Whether the command line asks for a sweep (Hydra's -m / --multirun)."""
    return "-m" in args or "--multirun" in args


def sweep_variants(name: str, args: List[str]) -> List[List[str]]:
    """The override lists that prevalidate composes: the first job of the sweep, then one variant per
    further value of each swept key (the others at their first value). Without -m, the overrides as given.
    Raises as sweep_choices does."""
    return variants_of(sweep_choices(name, args))


def variants_of(choices: List[List[str]]) -> List[List[str]]:
    """The first job of `choices` (each key at its first value), then one list per further value of a key."""
    firsts = [c[0] for c in choices]
    return [firsts] + [firsts[:i] + [value] + firsts[i + 1 :] for i, c in enumerate(choices) for value in c[1:]]


def sweep_choices(name: str, args: List[str]) -> List[List[str]]:
    """For each key of the command line, in order, the overrides of its values: the jobs of a -m sweep are
    their cartesian product, in Hydra's basic sweeper's order. Without -m, each override as given, alone.

    With -m every override goes through Hydra's own BasicSweeper with the command's config loader, so
    `glob(...)` sees the group's options and each override is written as the jobs will get it (the
    sweeper turns `~key` into `~key=null`, for one).

    Raises:
        ConfigError: a sweep without -m, a sweep the basic sweeper cannot enumerate (interval), or
            a sweep with no value (a glob that matches no option, an empty range).
    """
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import CONFIG_DIR, register_schemas

    lines = [a for a in overrides_in(args) if not a.startswith(("hydra.", "hydra/"))]
    register_schemas()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        parsed = parser.parse_overrides(lines)
        if not is_multirun(args):
            for override in parsed:
                if override.is_sweep_override():
                    raise ConfigError(
                        f"{override.input_line} is a sweep: add -m to run one job per value, or quote the value "
                        f"to give it as one string ({override.get_key_element()}='...')"
                    )
            return [[line] for line in lines]
        per_key: Dict[str, List[str]] = {}  # key -> the overrides of its values; a repeated key: the last wins, as in Hydra
        for override in parsed:
            line = override.input_line
            if override.is_sweep_override() and not override.is_discrete_sweep():
                kind = override.value_type.name.lower().replace("_", " ")
                raise ConfigError(
                    f"{line}: Hydra's basic sweeper cannot enumerate an {kind}; use a list (a,b,c), range(start,stop,step), choice(...) or glob(...)"
                )
            check_ranges(line, override.value())
            (jobs,) = BasicSweeper.split_arguments([override], max_batch_size=None)
            if not jobs:
                group = override.key_or_group
                options = loader.get_group_options(group) if override.value_type.name == "GLOB_CHOICE_SWEEP" else None
                said = (
                    f"; the choices of {group}: {', '.join(options)}"
                    if options
                    else f"; glob(...) picks among the choices of a config group, and {group} is not one"
                    if options is not None
                    else ""
                )
                raise ConfigError(f"{line} gives no value to run{said}")
            per_key[override.get_key_element()] = [job[0] for job in jobs]
    return list(per_key.values())


def existing_sweep_jobs(args: List[str], choices: List[List[str]]) -> List[Tuple[Path, List[str]]]:
    """(folder, overrides) of each job of this -m sweep whose folder already holds a run: for a sweep into a
    named `hydra.sweep.dir` with Hydra's default `hydra.sweep.subdir` (the job's number), the jobs in the
    basic sweeper's order (the cartesian product of `choices`, see sweep_choices). Empty where the folder is
    new, interpolated, or its jobs are named another way."""
    import itertools

    folder = last_value(args, "hydra.sweep.dir")
    if not is_multirun(args) or folder is None or "${" in str(folder) or last_value(args, "hydra.sweep.subdir") is not None:
        return []
    from .rundir import METRICS

    root = Path(str(folder))
    if not root.is_dir():
        return []
    jobs = itertools.product(*choices)
    return [(root / str(i), list(job)) for i, job in enumerate(jobs) if (root / str(i) / METRICS).is_file()]


MAX_RANGE_VALUES = 100_000  # a range with more values is a typo (a step of 1e-9), not a sweep anyone can run


def check_ranges(line: str, value: Any) -> None:
    """Refuse a `range(start,stop,step)` in a sweep (also inside shuffle(...) or sort(...)) that Hydra cannot
    enumerate: a step of zero, or more than MAX_RANGE_VALUES values.

    Raises:
        ConfigError: naming the override and the range.
    """
    from hydra.core.override_parser.types import RangeSweep, Sweep

    if not isinstance(value, Sweep):
        return
    for inner in getattr(value, "list", None) or []:  # sort(...), shuffle(...) of a sweep: a ChoiceSweep of values
        check_ranges(line, inner)
    if isinstance(value, RangeSweep):
        if value.step == 0:
            raise ConfigError(f"{line}: a range's step must not be zero; e.g. range(0,1,0.25) gives 0, 0.25, 0.5, 0.75")
        if (value.stop - value.start) / value.step > MAX_RANGE_VALUES:
            raise ConfigError(f"{line}: this range has more than {MAX_RANGE_VALUES:,} values; check its step")


def describe(exc: Exception) -> tuple[str, int]:
    """One line (and an exit code) for a Hydra / OmegaConf error."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    cause = exc.__cause__
    cause_line = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if isinstance(exc, MissingConfigException):
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        if found:
            group, choice = found.groups()
            listed = f"; choose one of: {', '.join(options)}" if options else ""
            return f"unknown {group} {choice!r}{listed}", EXIT_BAD_INPUT
        return first, EXIT_BAD_INPUT
    if isinstance(exc, ConfigCompositionException):
        twice = re.match(r"Multiple values for (\S+?)\.", first)
        if twice:  # `+group=choice` for a group the defaults list already has
            return f"{twice.group(1)} already has a choice in the defaults: choose with {twice.group(1)}=... (no +)", EXIT_BAD_INPUT
        key = re.search(r"Could not override '([^']+)'", first)
        if key and "not in" in cause_line:
            return f"unknown key {key.group(1)!r} ({cause_line}); see the keys with --help", EXIT_BAD_INPUT
        if "Could not append to config" in first or "Could not delete" in first:
            return f"{first} ({cause_line})" if cause_line else first, EXIT_BAD_INPUT
        merge = re.search(r"Error merging override (\S+)", first)
        if merge and cause_line:
            return f"bad value in {merge.group(1)}: {cause_line}", EXIT_BAD_INPUT
        return f"{first}{': ' + cause_line if cause_line else ''}", EXIT_BAD_INPUT
    if isinstance(exc, OverrideParseException):
        from .config import unparsable

        lines = [line for line in exc.message.splitlines() if line.strip() and not line.startswith(("See https", "Error parsing"))]
        return unparsable(exc.override, lines[0] if lines else first), EXIT_BAD_INPUT
    if isinstance(exc, OmegaConfBaseException):
        return first, EXIT_BAD_INPUT
    if isinstance(exc, ValueError) and first.startswith("Only one of --run"):  # e.g. -m together with --cfg
        return first, EXIT_BAD_INPUT
    if isinstance(exc, OSError) and exc.filename:  # Hydra could not create or write the output folder
        return f"cannot write {exc.filename}: {exc.strerror}; choose a writable hydra.run.dir", EXIT_BAD_INPUT
    return f"internal error: {type(exc).__name__}: {first} (HYDRA_FULL_ERROR=1 shows the traceback)", 1

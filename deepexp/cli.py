"""`deepexp <command> [overrides]`: dispatch to the Hydra app of that command.

Each command is `configs/<command>.yaml` plus a task function. Bad input of any
kind (unknown command, group choice or key, wrong type, impossible value, missing
data) ends with one line on stderr and exit code 2; a diverged run with 3
(DESIGN.md). `HYDRA_FULL_ERROR=1` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from .errors import ConfigError, DeepexpError

EXIT_BAD_INPUT = 2
_show_traceback = False  # the user's HYDRA_FULL_ERROR, before we set it for Hydra
HYDRA_FLAGS_WITHOUT_RUN = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")


@dataclass(frozen=True)
class Command:
    summary: str
    task: str  # "module:function" under deepexp, imported only when the command runs (a fast --help)
    presets: bool = False  # `preset=X` picks configs/<command>/preset/X.yaml

    def run(self, cfg) -> int:
        """Import the task function and run it on one composed config; returns an exit code."""
        module, function = self.task.split(":")
        return getattr(importlib.import_module(f".{module}", __package__), function)(cfg)


COMMANDS: Dict[str, Command] = {
    "train": Command("train one model with per-layer monitoring (TensorBoard, metrics.json, checkpoints)",
                     "commands.train:train_command"),
    "activations": Command("project 1: the activation-function study (9 activations x seeds, diagnosis, report)",
                           "experiments.activations:activations_command", presets=True),
    "residual": Command("project 2: plain vs residual networks, shortcuts, dense connections, gradient flow",
                        "experiments.residual:residual_command", presets=True),
    "efficient": Command("project 3: baseline CNN vs efficient designs: params, MACs, latency, accuracy, INT8, ONNX",
                         "experiments.efficient:efficient_command", presets=True),
    "nas": Command("project 4: architecture search (random, evolution, NSGA-II, zero-cost), Pareto front, top 5",
                   "experiments.nas:nas_command", presets=True),
    "report": Command("summarise any folder of runs: group over seeds, mean ± std, curves, bars, report.md",
                      "commands.report:report_command"),
}


def usage() -> str:
    lines = ["usage: deepexp <command> [key=value ...] [-m for a sweep]", "", "commands:"]
    lines += [f"  {name:<12} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "`deepexp <command> --help` shows that command's config groups, choices and defaults.",
              "Example: deepexp train model=resnet18 act=gelu dataset=cifar10 device=auto"]
    return "\n".join(lines)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    sys.stderr.write(f"deepexp: {message}\n")
    return code


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
    if COMMANDS[name].presets:  # every study spells it `preset=quick`; Hydra's group is per command
        args = [f"{name}/{a}" if a.startswith("preset=") else a for a in args]
    if name == "train":  # `model=nas arch=PATH`, as the course writes it, is the model's own key
        args = [f"model.{a}" if a.startswith("arch=") else a for a in args]
    # Hydra re-raises instead of printing its own multi-line report; we print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if not any(a in HYDRA_FLAGS_WITHOUT_RUN for a in args):
            args = resolve_resume(name, args)
            prevalidate(name, args)
        return launch(name, args)
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


def launch(name: str, args: List[str]) -> int:
    import hydra

    from .config import CONFIG_DIR, register_schemas

    register_schemas()
    codes: List[int] = []
    command = COMMANDS[name]

    def task(cfg) -> int:
        # Under a launcher that runs jobs in other processes (joblib, submitit), `codes` stays
        # empty here; each job's outcome is in its metrics.json (`deepexp report` counts them).
        try:
            codes.append(command.run(cfg))
            return codes[-1]
        except DeepexpError as exc:
            # SystemExit passes through Hydra's job runner untouched (it catches Exception only),
            # which keeps Hydra from adding its own multi-line report.
            if _show_traceback:
                raise
            sys.exit(fail(str(exc), exc.exit_code))

    app = hydra.main(config_path=str(CONFIG_DIR), config_name=name, version_base="1.3")(task)
    saved_argv = sys.argv
    sys.argv = [f"deepexp {name}", *args]
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
    return max(codes, default=0)


# --- before Hydra starts: resume=true and validation ---------------------------------------


def resolve_resume(name: str, args: List[str]) -> List[str]:
    """`resume=true` without a run directory: continue the newest unfinished run of this command."""
    if "resume=true" not in args or any(a.startswith("hydra.run.dir=") for a in args):
        return args
    from .rundir import read_metrics

    candidates = sorted(Path("outputs", name).glob("**/metrics.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if (read_metrics(path.parent) or {}).get("status") == "running":
            print(f"resume=true: continuing {path.parent}")
            return [*args, f"hydra.run.dir={path.parent}"]
    raise ConfigError(f"resume=true: no unfinished run under {Path('outputs', name)}; pass hydra.run.dir=DIR of the run to continue")


def prevalidate(name: str, args: List[str]) -> None:
    """Compose and validate before Hydra creates any run directory.

    For a sweep (`-m a=1,2 b=x,y`), each value of each swept key is checked with the
    other keys at their first value: every bad value is caught without composing the
    whole cartesian product.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import compose_config, validate

    overrides = [a for a in args if not a.startswith("-") and not a.startswith(("hydra.", "hydra/"))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    firsts = [c[0] for c in choices]
    variants = [firsts] + [firsts[:i] + [value] + firsts[i + 1:] for i, c in enumerate(choices) for value in c[1:]]
    typed = [validate(compose_config(name, variant)) for variant in variants]
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    if run_dir and len(typed) == 1 and name == "train":
        # Refuse a changed config here, before Hydra rewrites the run's .hydra/ record.
        from .rundir import read_metrics

        earlier = read_metrics(Path(run_dir))
        if earlier:
            from .train import check_resumable, flat_config  # (imports torch: only when there is a run to check)

            check_resumable(earlier.get("config", {}), flat_config(typed[0]), Path(run_dir))


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
        return f"cannot parse the overrides: {first}", EXIT_BAD_INPUT
    if isinstance(exc, OmegaConfBaseException):
        return first, EXIT_BAD_INPUT
    if isinstance(exc, ValueError) and first.startswith("Only one of --run"):  # e.g. -m together with --cfg
        return first, EXIT_BAD_INPUT
    if isinstance(exc, OSError) and exc.filename:  # Hydra could not create or write the output folder
        return f"cannot write {exc.filename}: {exc.strerror}; choose a writable hydra.run.dir", EXIT_BAD_INPUT
    return f"internal error: {type(exc).__name__}: {first} (HYDRA_FULL_ERROR=1 shows the traceback)", 1

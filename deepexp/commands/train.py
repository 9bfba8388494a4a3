"""`deepexp train`: one run of the trainer, then a table of its results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from ..config import TrainConfig, job_output_dir, validate
from ..progress import ConsoleReporter, plain_console
from ..rundir import read_metrics


def train_command(cfg: DictConfig) -> int:
    from ..train import train  # here, not at the top: check_command needs torch only for a run to compare with

    typed = validate(cfg)
    hydra = HydraConfig.get()
    run_dir = job_output_dir()
    label = f"[{hydra.job.num}]" if hydra.mode.name == "MULTIRUN" else ""
    console = plain_console()
    result = train(typed, run_dir, ConsoleReporter(console, label=label), provenance={"command": "train", "overrides": list(hydra.overrides.task)})
    console.print(results_table(result.metrics))
    # On its own line, never cut to the table's width: the path is there to be copied.
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    return result.exit_code


def check_command(typed: TrainConfig, run_dir: Optional[Path]) -> None:
    """What `deepexp train` refuses before anything is written, beyond its validated config `typed`: a run
    already in `run_dir` whose config differs in anything that changes the numbers (train.check_resumable)."""
    earlier = read_metrics(run_dir) if run_dir is not None else None
    if earlier:
        from ..experiments.runner import fresh_folder_advice
        from ..train import check_resumable, flat_config  # (imports torch: only when there is a run to check)

        check_resumable(earlier.get("config", {}), flat_config(typed), run_dir, fresh_folder_advice())


def results_table(metrics: dict) -> Table:
    """The run's outcome as a two-column table; a value the run did not record (or recorded as null, as NaN
    is stored) shows as "-"."""
    config = metrics["config"]
    table = Table(title=f"{config.get('model')} / {config.get('act')} on {config.get('dataset')} (seed {config.get('seed')})")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    last = metrics["history"][-1] if metrics.get("history") else {}
    test = metrics.get("test") or {}

    def num(value, spec: str = ".4f") -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        ("status", metrics["status"] + (f" at step {metrics['diverged_at_step']}" if metrics.get("diverged_at_step") else "")),
        ("parameters", num(metrics.get("params"), ",")),
        ("epochs", num(metrics.get("epochs_done"), "d")),
        ("train loss / acc", f"{num(last.get('train_loss'))} / {num(last.get('train_acc'))}"),
        ("val loss / acc", f"{num(last.get('val_loss'))} / {num(last.get('val_acc'))}"),
        ("best val acc", num(metrics.get("best_val_acc"))),
        ("test loss / acc", f"{num(test.get('loss'))} / {num(test.get('acc'))}" if test else "-"),
        (
            "grad norm first / last layer",
            f"{num(last.get('grad_norm_first'), '.2e')} / {num(last.get('grad_norm_last'), '.2e')}" if "grad_norm_first" in last else "-",
        ),
        ("training time", f"{metrics['seconds']:.1f} s" if metrics.get("seconds") is not None else "-"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table

"""`deepexp train`: one run of the trainer, then a table of its results."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from ..config import validate
from ..progress import ConsoleReporter, plain_console
from ..train import train


def train_command(cfg: DictConfig) -> int:
    typed = validate(cfg)
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    label = f"[{hydra.job.num}]" if hydra.mode.name == "MULTIRUN" else ""
    console = plain_console()
    result = train(typed, run_dir, ConsoleReporter(console, label=label),
                   provenance={"command": "train", "overrides": list(hydra.overrides.task)})
    console.print(results_table(result.metrics, run_dir))
    return result.exit_code


def results_table(metrics: dict, run_dir: Path) -> Table:
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
        ("grad norm first / last layer", f"{num(last.get('grad_norm_first'), '.2e')} / {num(last.get('grad_norm_last'), '.2e')}"
         if "grad_norm_first" in last else "-"),
        ("training time", f"{metrics['seconds']:.1f} s" if metrics.get("seconds") is not None else "-"),
        ("run directory", str(run_dir)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table

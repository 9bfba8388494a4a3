"""`deepexp train`: one run of the trainer, then a table of its results."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ..config import validate
from ..progress import ConsoleReporter
from ..train import train


def train_command(cfg: DictConfig) -> int:
    typed = validate(cfg)
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    label = f"[{hydra.job.num}]" if hydra.mode.name == "MULTIRUN" else ""
    console = Console()
    result = train(typed, run_dir, ConsoleReporter(console, label=label),
                   provenance={"command": "train", "overrides": list(hydra.overrides.task)})
    console.print(results_table(result.metrics))
    # On its own line, never cut to the table's width: the path is there to be copied.
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    return result.exit_code


def results_table(metrics: dict) -> Table:
    config = metrics["config"]
    table = Table(title=f"{config['model']} / {config['act']} on {config['dataset']} (seed {config['seed']})")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    last = metrics["history"][-1] if metrics["history"] else {}
    test = metrics.get("test") or {}
    rows = [
        ("status", metrics["status"] + (f" at step {metrics['diverged_at_step']}" if metrics.get("diverged_at_step") else "")),
        ("parameters", f"{metrics['params']:,}"),
        ("epochs", str(metrics["epochs_done"])),
        ("train loss / acc", f"{last.get('train_loss', float('nan')):.4f} / {last.get('train_acc', float('nan')):.4f}"),
        ("val loss / acc", f"{last.get('val_loss', float('nan')):.4f} / {last.get('val_acc', float('nan')):.4f}"),
        ("best val acc", f"{metrics['best_val_acc']:.4f}" if metrics.get("best_val_acc") is not None else "-"),
        ("test loss / acc", f"{test['loss']:.4f} / {test['acc']:.4f}" if test else "-"),
        ("grad norm first / last layer", f"{last['grad_norm_first']:.2e} / {last['grad_norm_last']:.2e}" if "grad_norm_first" in last else "-"),
        ("training time", f"{metrics['seconds']:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table

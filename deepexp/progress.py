"""What a training run shows in the terminal: a rich progress bar and one line per epoch.

The trainer only calls these methods, so a study can pass a quieter reporter.
"""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ConsoleReporter:
    """Progress bar (epoch, loss, accuracy, images/s) on a terminal; plain epoch lines elsewhere."""

    def __init__(self, console: Console | None = None, bar: bool | None = None, label: str = ""):
        self.console = console or Console()
        self.errors = Console(stderr=True)
        self.label = label
        show_bar = self.console.is_terminal if bar is None else bar
        self._progress = Progress(
            TextColumn("{task.description}"),
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}  {task.fields[ips]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not show_bar,
            transient=True,
        )
        self._task = None

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self._epochs = epochs
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=epochs * steps_per_epoch,
                                             completed=first_epoch * steps_per_epoch,
                                             epoch=f"{first_epoch + 1}/{epochs}", loss=0.0, acc=0.0, ips=0.0)

    def step(self, epoch: int, completed: int, loss: float, acc: float, images_per_s: float) -> None:
        self._progress.update(self._task, completed=completed, epoch=f"{epoch}/{self._epochs}", loss=loss, acc=acc, ips=images_per_s)

    def epoch_end(self, row: dict) -> None:
        self.console.print(
            f"{self.label + ' ' if self.label else ''}epoch {row['epoch']}/{self._epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
            f"{row['seconds']:.1f}s  {row['images_per_s']:,.0f} img/s",
            highlight=False, soft_wrap=True,
        )

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.errors.print(f"warning: {message}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._progress.stop()


class QuietReporter(ConsoleReporter):
    """Warnings only: for studies that show their own progress."""

    def __init__(self, label: str = ""):
        super().__init__(Console(file=sys.stderr), bar=False, label=label)

    def epoch_end(self, row: dict) -> None:
        pass

    def info(self, message: str) -> None:
        pass

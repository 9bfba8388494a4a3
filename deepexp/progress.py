"""What a training run shows in the terminal: a rich progress bar and one line per epoch.

The trainer only calls these methods, so a study can pass a quieter reporter. Every rich
console deepexp prints through comes from `plain_console`, which prints text as given.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def plain_console(stderr: bool = False, file=None, width: int | None = None) -> Console:
    """A rich Console that prints every string as given, table cells and titles included: markup off
    (a path such as `/data/[v1]/a.npz` or `t[/x]y` is text, not a style tag) and no highlighting.
    The one way deepexp makes a console, since what it prints carries user values (paths, config values).

    Args:
        stderr: print to standard error instead of standard output.
        file: print to this file instead (overrides `stderr`).
        width: a fixed width in characters (None: the terminal's, or rich's default of 80 elsewhere).
    """
    return Console(stderr=stderr, file=file, width=width, markup=False, highlight=False)


class ConsoleReporter:
    """Progress bar (epoch, loss, accuracy, images/s) on a terminal; plain epoch lines elsewhere."""

    def __init__(self, console: Console | None = None, bar: bool | None = None, label: str = ""):
        self.console = console or plain_console()
        self.errors = plain_console(stderr=True)
        self.label = label
        show_bar = self.console.is_terminal if bar is None else bar
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),  # the label is user text
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
        self._task = self._progress.add_task(
            self.label,
            total=epochs * steps_per_epoch,
            completed=first_epoch * steps_per_epoch,
            epoch=f"{first_epoch + 1}/{epochs}",
            loss=0.0,
            acc=0.0,
            ips=0.0,
        )

    def step(self, epoch: int, completed: int, loss: float, acc: float, images_per_s: float) -> None:
        self._progress.update(self._task, completed=completed, epoch=f"{epoch}/{self._epochs}", loss=loss, acc=acc, ips=images_per_s)

    def epoch_end(self, row: dict) -> None:
        self.console.print(
            f"{self.label + ' ' if self.label else ''}epoch {row['epoch']}/{self._epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
            f"{row['seconds']:.1f}s  {row['images_per_s']:,.0f} img/s",
            highlight=False,
            soft_wrap=True,
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
        super().__init__(plain_console(file=sys.stderr), bar=False, label=label)

    def epoch_end(self, row: dict) -> None:
        pass

    def info(self, message: str) -> None:
        pass

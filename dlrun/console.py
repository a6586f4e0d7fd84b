"""Everything rich: run header, model summary, epoch progress, result tables, errors.

Progress is updated once per epoch (never per batch), so the display costs no throughput.
On a terminal it is a live bar; elsewhere (CI, logs) a line every ~10% of the epochs.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def error(message: str, hint: str | None = None) -> None:
    """The one line a user sees for a DlrunError."""
    line = f"[bold red]error:[/] {_esc(message)}"
    if hint:
        line += f" [dim]({_esc(hint)})[/]"
    err_console.print(line, soft_wrap=True)


def warn(message: str) -> None:
    """A warning about the data or the config: one line, the run goes on."""
    err_console.print(f"[bold yellow]warning:[/] {_esc(message)}", soft_wrap=True)


def note(message: str) -> None:
    """A choice the run made from the data (the text model, a sequence length): one line."""
    console.print(f"[bold cyan]note:[/] {_esc(message)}", soft_wrap=True)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def header(command: str, task: str, model: str, data: str, facts: dict, run_id: str | None) -> None:
    parts = [f"[bold]dlrun {command}[/]", f"task={task}", f"model={model}", f"data={data}"]
    parts += [f"{k}={v}" for k, v in facts.items()]
    console.print("  ".join(parts))
    if run_id:
        console.print(f"[dim]mlflow run {run_id}[/]")


def model_summary(model) -> None:
    """One line per layer (name, type, output shape, params) and the total."""
    table = Table(title=f"model {model.name}", show_edge=False, header_style="bold")
    for col in ("layer", "type", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    layers = model.layers
    shown = layers if len(layers) <= 30 else layers[:12] + layers[-12:]
    for layer in shown:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):
            shape = "?"
        table.add_row(layer.name, type(layer).__name__, shape, f"{layer.count_params():,}")
    console.print(table)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    console.print(f"params: {model.count_params():,} (trainable {trainable:,})")


class Progress:
    """Progress of `total` `unit`s (epochs, steps, episodes) with a few live numbers.

    On a terminal a live bar; elsewhere (CI, logs) a line at the start, every ~10% and at
    least every 30 s (a long run in a batch job must show it is alive).
    """

    QUIET_S = 30.0

    def __init__(self, total: int, unit: str = "epoch", enabled: bool = True):
        self.total, self.unit = max(1, int(total)), unit
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.every = max(1, self.total // 10)
        self._next = 1
        self._last = time.monotonic()
        self._progress = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._progress = Bar(TextColumn(unit), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console)
            self._task = self._progress.add_task("", total=self.total)
            self._progress.start()

    def update(self, done: int, metrics: dict) -> None:
        if not self.enabled:
            return
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
        if self._progress is not None:
            self._progress.update(self._task, completed=done, description=text)
        elif done >= self._next or done >= self.total or time.monotonic() - self._last >= self.QUIET_S:
            console.print(f"{self.unit} {done}/{self.total}  {text}")
            self._next = (done // self.every + 1) * self.every
            self._last = time.monotonic()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def report(report, title: str = "results") -> None:
    """Every table of the report, then the scalar metrics."""
    for name, rows in report.tables.items():
        if rows:
            print_rows(rows, name)
    if report.metrics:
        table = Table(title=title, show_edge=False, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in report.metrics.items():
            if "/f1/" in k or k.startswith("baseline/"):  # already in the class/comparison tables
                continue
            table.add_row(k, _fmt(v))
        console.print(table)
    for path in report.files.values():
        console.print(f"wrote {path}")


def print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title, show_edge=False, header_style="bold")
    cols = list(dict.fromkeys(k for row in rows for k in row))
    for c in cols:
        table.add_column(str(c), justify="left" if isinstance(rows[0].get(c), str) else "right")
    for row in rows:
        table.add_row(*[_fmt(row.get(c, "")) for c in cols])
    console.print(table)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


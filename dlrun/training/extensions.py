"""Run extensions: what takes part in a training run besides the task, attached to it instead of
written into the runner. Each one may add Keras callbacks once the model and the run handle
exist, keep what exists when a signal stops the run, and add to the run when it has finished.

Built in, each enabled by its own config keys and imported only when the runner asks for a run's
extensions (`for_run`):
  - TensorBoard (tracking.tensorboard): the callback; its event files logged as artifacts.
  - Backup and resume (trainer.backup, trainer.resume; training/backup.py): restores a stopped
    run, backs up every few seconds, saves at a stop, marks the run's folder finished.
Attached for the length of a job by something outside the runner (`with attached(ext):`):
  - an Optuna trial (optuna_sweep.TrialExtension): reports each epoch and prunes.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunContext:
    """What an extension sees of the run: its config and folder, the task, the strategy, the
    tracker, the objective, the model and the run handle (training/handle.py)."""

    cfg: Any
    overrides: list[str]
    workdir: Path
    task: Any
    task_name: str
    strategy: Any
    tracker: Any
    chief: bool
    resume: Any = None  # backup.State of the stopped run that trainer.resume names
    objective: Any = None
    model: Any = None
    run: Any = None
    global_batch: int | None = None  # the batch size over all replicas
    extensions: list = field(default_factory=list)  # the run's extensions (for_run)


class Extension:
    """Each hook does nothing unless an extension says otherwise."""

    def callbacks(self, ctx: RunContext) -> list:
        return []

    def stopped(self, ctx: RunContext) -> None:
        """The run was stopped (Ctrl-C, SIGTERM) after fit returned: keep what exists."""

    def finished(self, ctx: RunContext) -> None:
        """The run trained, was evaluated and logged."""


# "module:function" of each built-in extension's factory: (ctx) -> Extension | None
BUILT_IN = ("dlrun.training.callbacks:tensorboard_extension", "dlrun.training.backup:backup_extension")

_attached: list[Extension] = []


@contextlib.contextmanager
def attached(extension: Extension):
    """`extension` takes part in the runs started inside the block (in this process)."""
    _attached.append(extension)
    try:
        yield extension
    finally:
        _attached.remove(extension)


def for_run(ctx: RunContext) -> list[Extension]:
    """The built-in extensions the run's config enables, then the attached ones."""
    found = []
    for spec in BUILT_IN:
        module, name = spec.split(":")
        ext = getattr(importlib.import_module(module), name)(ctx)
        if ext is not None:
            found.append(ext)
    return [*found, *_attached]

"""Resume after a crash: a backup of the training state in the run folder, and finding it again.

The backup (`<run dir>/backup/`) is the whole Keras model with its optimizer state
(`model.keras`) plus `state.json`: epochs done, the MLflow run id, the best value so far and
the overrides of the command. It is written at epoch ends at most every
`trainer.backup_interval_s` seconds (0: every epoch), and when Ctrl-C or SIGTERM stops a run.
The run's per-epoch metrics are sent to MLflow right after each backup and only then, so a
run killed at any moment (even SIGKILL) has metrics exactly up to its last backup, and the
resumed run continues the curve without gaps or repeated steps.

Keras' BackupAndRestore does the saving part but not on a time budget, and knows nothing of
the MLflow run to continue; hence this small module.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import DlrunError

FOLDER, MODEL, STATE = "backup", "model.keras", "state.json"


@dataclass
class State:
    folder: Path  # the backup folder; its parent is the run folder
    epochs_done: int
    run_id: str | None
    best_value: float | None
    best_step: int | None
    overrides: list[str]
    finished: bool = False
    logs: dict | None = None  # epoch (1-based, as text) -> Keras logs, to re-send what a kill cut off

    @property
    def run_dir(self) -> Path:
        return self.folder.parent


def read(folder: Path) -> State | None:
    path = folder / STATE
    if not path.is_file() or not (folder / MODEL).is_file():
        return None
    d = json.loads(path.read_text())
    return State(folder, int(d["epochs_done"]), d.get("run_id"), d.get("best_value"), d.get("best_step"),
                 list(d.get("overrides", [])), bool(d.get("finished", False)), d.get("logs") or {})


def _write_state(folder: Path, **fields) -> None:
    tmp = folder / f".{STATE}.tmp"
    tmp.write_text(json.dumps(fields, indent=1))
    os.replace(tmp, folder / STATE)


def mark_finished(run_dir: Path) -> None:
    """A finished run is never picked by trainer.resume=auto."""
    state = read(run_dir / FOLDER)
    if state is not None:
        _write_state(state.folder, epochs_done=state.epochs_done, run_id=state.run_id, best_value=state.best_value,
                     best_step=state.best_step, overrides=state.overrides, finished=True, logs=state.logs)


def own_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a run (what trainer.resume=auto matches), without the resume key."""
    return sorted(o for o in overrides if not o.lstrip("+").startswith("trainer.resume="))


def locate(resume: str, overrides: list[str], search: Path = Path("outputs")) -> State:
    """The backup to resume: `resume` is a run folder, an MLflow run id, or `auto` (the newest
    unfinished backup under ./outputs made by the same command)."""
    resume = str(resume)
    if Path(resume).is_dir():
        state = read(Path(resume) / FOLDER)
        if state is None:
            raise DlrunError(f"trainer.resume: '{resume}' has no backup ({FOLDER}/{STATE})",
                             "the run kept none: trainer.backup was false, or it ended before its first epoch")
        return state
    candidates = [s for s in (read(p.parent) for p in search.glob(f"*/*/{FOLDER}/{STATE}")) if s is not None]
    if resume == "auto":
        mine = own_overrides(overrides)
        matching = [s for s in candidates if not s.finished and own_overrides(s.overrides) == mine]
        if not matching:
            raise DlrunError("trainer.resume=auto: no unfinished run of this command under ./outputs",
                             "give the run folder or the MLflow run id: trainer.resume=<dir|run id>")
        return max(matching, key=lambda s: (s.folder / STATE).stat().st_mtime)
    found = [s for s in candidates if s.run_id == resume]
    if not found:
        raise DlrunError(f"trainer.resume: no backup of run '{resume}' under ./outputs",
                         "give the run folder instead: trainer.resume=outputs/<date>/<time>-<id>")
    return found[0]


def callback(folder: Path, interval_s: float, run_id, overrides: list[str], best, on_saved, on_begin=None):
    """A Keras callback writing the backup at epoch ends (at most every interval_s seconds);
    `best` is the run's BestKeeper (or None), `on_saved` sends the metrics held back so far,
    `on_begin` runs when Keras starts training (custom loops never call it)."""
    import keras

    class Backup(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last = time.monotonic()
            self.epochs_done = 0
            self.logs = {}

        def on_train_begin(self, logs=None):
            if on_begin is not None:
                on_begin()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_done = epoch + 1
            self.logs[str(epoch + 1)] = {k: float(v) for k, v in (logs or {}).items()}
            if time.monotonic() - self.last >= interval_s:
                self.save()

        def save(self):
            if self.model is None or self.epochs_done == 0:
                return
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{MODEL}.tmp.keras"
            self.model.save(tmp)  # weights and optimizer state
            os.replace(tmp, folder / MODEL)
            _write_state(folder, epochs_done=self.epochs_done, run_id=run_id,
                         best_value=best.value if best is not None else None,
                         best_step=best.step if best is not None else None, overrides=list(overrides),
                         logs=self.logs)
            self.last = time.monotonic()
            on_saved()  # metrics after the state: the store never runs ahead of the backup

    return Backup()


def unlogged(state: State, last_logged: int) -> dict[int, dict]:
    """Epochs the backup holds but the MLflow run does not (a kill between the two writes)."""
    return {int(e): logs for e, logs in (state.logs or {}).items() if last_logged < int(e) <= state.epochs_done}


def restore(state: State, model, best) -> object:
    """The backed-up model (weights and optimizer state) in place of `model`, and the best-so-far
    seeded into the run's BestKeeper from the run folder's best.keras."""
    import keras

    restored = keras.saving.load_model(state.folder / MODEL)
    best_file = state.run_dir / "best.keras"
    if best is not None and state.best_value is not None:
        best.value, best.step, best.model = float(state.best_value), state.best_step, restored
        best.weights = keras.saving.load_model(best_file).get_weights() if best_file.is_file() else None
        if best.weights is None:
            best.value = None  # nothing to restore: let the resumed epochs choose again
    result = restored if model is None else _into(model, restored)
    if best is not None and best.model is not None:
        best.model = result
    return result


def _into(model, restored):
    """Copy weights and optimizer state of `restored` into `model` (built in the strategy scope)."""
    model.set_weights(restored.get_weights())
    if getattr(model, "optimizer", None) is not None and getattr(restored, "optimizer", None) is not None:
        model.optimizer.build(model.trainable_variables)
        for mine, theirs in zip(model.optimizer.variables, restored.optimizer.variables, strict=False):
            mine.assign(theirs)
    return model

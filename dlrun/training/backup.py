"""Resume after a crash: a backup of the training state in the run folder, and finding it again.

The backup (`<run dir>/backup/`) is the whole Keras model with its optimizer state
(`model.keras`) plus `state.json`: epochs done, the MLflow run id, the best value so far and
the overrides of the command. `state.json` is written when the run starts (0 epochs done: a
run killed before its first backup is found, and trains again from epoch 0 in its MLflow
run); the model after the first epoch, then at epoch ends at most every
`trainer.backup_interval_s` seconds (0: every epoch), and when Ctrl-C or SIGTERM stops a run.
While a run trains, its process holds a lock on `backup/run.lock`: a run found RUNNING in
MLflow whose lock nobody holds was killed (SIGKILL, a lost node) and can be resumed.
The run's per-epoch metrics are sent to MLflow right after each backup and only then, so a
run killed at any moment (even SIGKILL) has metrics exactly up to its last backup, and the
resumed run continues the curve without gaps or repeated steps.

Keras' BackupAndRestore does the saving part but not on a time budget, and knows nothing of
the MLflow run to continue; hence this small module.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import DlrunError

FOLDER, MODEL, STATE, LOCK = "backup", "model.keras", "state.json", "run.lock"


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
    best_tie: float | None = None  # the best step's validation loss (BestKeeper's tie-breaker)

    @property
    def run_dir(self) -> Path:
        return self.folder.parent

    @property
    def has_model(self) -> bool:
        """False for a run stopped before its first backup: it trains again from epoch 0."""
        return self.epochs_done > 0 and (self.folder / MODEL).is_file()


def read(folder: Path) -> State | None:
    path = folder / STATE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        return State(folder, int(d["epochs_done"]), d.get("run_id"), d.get("best_value"), d.get("best_step"),
                     list(d.get("overrides", [])), bool(d.get("finished", False)), d.get("logs") or {},
                     d.get("best_tie"))
    except (ValueError, KeyError, TypeError):
        return None  # not ours, or cut short: no backup to resume


def _write_state(folder: Path, **fields) -> None:
    tmp = folder / f".{STATE}.tmp"
    tmp.write_text(json.dumps(fields, indent=1))
    os.replace(tmp, folder / STATE)


def _rewrite(state: State, **changes) -> None:
    fields = dict(epochs_done=state.epochs_done, run_id=state.run_id, best_value=state.best_value,
                  best_step=state.best_step, overrides=state.overrides, finished=state.finished, logs=state.logs,
                  best_tie=state.best_tie)
    _write_state(state.folder, **{**fields, **changes})


def start(run_dir: Path, run_id, overrides: list[str]) -> None:
    """The run's record before it trains (0 epochs done), unless it has one (a resumed run)."""
    folder = run_dir / FOLDER
    if read(folder) is None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_state(folder, epochs_done=0, run_id=run_id, best_value=None, best_step=None,
                     overrides=list(overrides), finished=False, logs={})


def mark_finished(run_dir: Path) -> None:
    """A finished run is never picked by trainer.resume=auto."""
    state = read(run_dir / FOLDER)
    if state is not None:
        _rewrite(state, finished=True)


@contextlib.contextmanager
def hold(run_dir: Path):
    """Hold the run folder's lock while this process trains in it (the kernel lets go when the
    process dies, even by SIGKILL); a second process resuming the same folder is refused."""
    import fcntl

    folder = run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DlrunError(f"run folder '{run_dir}' is in use: {_running(holder(run_dir))}",
                             "wait for it to end, or stop it (Ctrl-C, kill <pid>) and resume it then") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def holder(run_dir: Path) -> str | None:
    """'<pid> <host>' of the live process training in `run_dir`, or None when no process holds
    its lock (the run ended, or its process is gone)."""
    import fcntl

    path = Path(run_dir) / FOLDER / LOCK
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "?"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def running_state(run_dir, resume_command: str) -> tuple[str, str | None]:
    """(what a run that MLflow shows RUNNING really is, from its folder's lock; a hint)."""
    if run_dir is None or not (Path(run_dir) / FOLDER / LOCK).is_file():
        return "it is RUNNING (still training, or stopped without a trace)", None
    who = holder(Path(run_dir))
    if who is not None:
        return f"it is still training: {_running(who)}", "wait for it to end"
    return "it was left RUNNING by a process that is gone (killed)", f"resume it: {resume_command}"


def _running(who: str | None) -> str:
    pid, _, host = (who or "?").partition(" ")
    return f"a dlrun process is still training it (pid {pid}{' on ' + host if host else ''})"


def own_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a run (what trainer.resume=auto matches), without the resume key."""
    return sorted(o for o in overrides if not o.lstrip("+").startswith("trainer.resume="))


def locate(resume: str, overrides: list[str], search: Path = Path("outputs")) -> State:
    """The backup to resume: `resume` is a run folder, an MLflow run id, or `auto` (the newest
    unfinished run made by the same command under ./outputs whose process is gone)."""
    resume = str(resume)
    if Path(resume).is_dir():
        state = read(Path(resume) / FOLDER)
        if state is None:
            raise DlrunError(f"trainer.resume: '{resume}' has no backup ({FOLDER}/{STATE})",
                             "the run kept none (trainer.backup was false), or it is not a dlrun run folder")
        return _resumable(state, resume)
    candidates = [s for s in (read(p.parent) for p in search.glob(f"*/*/{FOLDER}/{STATE}")) if s is not None]
    if resume == "auto":
        mine = own_overrides(overrides)
        matching = [s for s in candidates if not s.finished and own_overrides(s.overrides) == mine]
        idle = [s for s in matching if holder(s.run_dir) is None]
        if not idle:
            if matching:
                raise DlrunError(f"trainer.resume=auto: the unfinished run of this command in '{matching[0].run_dir}' "
                                 f"is not stopped: {_running(holder(matching[0].run_dir))}",
                                 "wait for it to end, or stop it and resume it then")
            if any(own_overrides(s.overrides) == mine for s in candidates):
                raise DlrunError("trainer.resume=auto: every run of this command under ./outputs finished: "
                                 "nothing to resume", "start a new run without trainer.resume")
            raise DlrunError("trainer.resume=auto: no unfinished run of this command under ./outputs",
                             "give the run folder or the MLflow run id: trainer.resume=<dir|run id>")
        return max(idle, key=lambda s: (s.folder / STATE).stat().st_mtime)
    found = [s for s in candidates if s.run_id == resume]
    if not found:
        raise DlrunError(f"trainer.resume: no run folder of run '{resume}' under ./outputs",
                         "give the run folder instead: trainer.resume=<its folder> (the dlrun.workdir tag of the run)")
    return _resumable(found[0], resume)


def _resumable(state: State, given: str) -> State:
    """`state` if its run can be resumed now; a finished or still training run is an error."""
    name = f"run {state.run_id}" if state.run_id else f"the run in '{state.run_dir}'"
    if state.finished:
        raise DlrunError(f"trainer.resume={given}: {name} finished (all its epochs ran): nothing to resume",
                         "start a new run without trainer.resume, or raise trainer.epochs in a new run")
    who = holder(state.run_dir)
    if who is not None:
        raise DlrunError(f"trainer.resume={given}: {name} is not stopped: {_running(who)}",
                         "wait for it to end, or stop it (Ctrl-C, kill <pid>) and resume it then")
    return state


def callback(folder: Path, interval_s: float, run_id, overrides: list[str], best, on_saved, on_begin=None):
    """A Keras callback writing the backup at epoch ends (at most every interval_s seconds);
    `best` is the run's BestKeeper (or None), `on_saved` sends the metrics held back so far,
    `on_begin` runs when Keras starts training (custom loops never call it)."""
    import keras

    class Backup(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last = None  # the first backup follows the first epoch, then one per interval
            self.epochs_done = self.saved = 0
            self.logs = {}

        def on_train_begin(self, logs=None):
            if on_begin is not None:
                on_begin()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_done = epoch + 1
            self.logs[str(epoch + 1)] = {k: float(v) for k, v in (logs or {}).items()}
            if self.last is None or time.monotonic() - self.last >= interval_s:
                self.save()

        def on_train_end(self, logs=None):
            self.save()  # the runner sends every epoch's metrics once fit returns: back them up first

        def save(self):
            if self.model is None or self.epochs_done == self.saved:
                return
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{MODEL}.tmp.keras"
            self.model.save(tmp)  # weights and optimizer state
            os.replace(tmp, folder / MODEL)
            _write_state(folder, epochs_done=self.epochs_done, run_id=run_id,
                         best_value=best.value if best is not None else None,
                         best_step=best.step if best is not None else None, overrides=list(overrides),
                         logs=self.logs, best_tie=best.tie if best is not None else None)
            self.last, self.saved = time.monotonic(), self.epochs_done
            on_saved()  # metrics after the state: the store never runs ahead of the backup

    return Backup()


def unlogged(state: State, last_logged: int) -> dict[int, dict]:
    """Epochs the backup holds but the MLflow run does not (a kill between the two writes)."""
    return {int(e): logs for e, logs in (state.logs or {}).items() if last_logged < int(e) <= state.epochs_done}


def restore(state: State, model, best) -> object:
    """The backed-up weights and optimizer state put into `model` (built in the strategy scope),
    and the best-so-far seeded into the run's BestKeeper from the run folder's best.keras."""
    import keras

    best_file = state.run_dir / "best.keras"
    if best is not None and state.best_value is not None:
        best.value, best.step, best.model, best.tie = float(state.best_value), state.best_step, model, state.best_tie
        best.weights = keras.saving.load_model(best_file).get_weights() if best_file.is_file() else None
        if best.weights is None:
            best.value = None  # nothing to restore: let the resumed epochs choose again
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:  # Keras builds it at the first step; its state needs it now
        optimizer.build(model.trainable_variables)
    # every variable the model holds, found by the path Keras saved it under: layers, the
    # optimizer, and a second optimizer a model with its own train_step keeps (a GAN's)
    model.load_weights(state.folder / MODEL)
    return model


def backup_extension(ctx):
    """trainer.backup / trainer.resume as a run extension (training/extensions.py): a resumed
    run gets its weights, optimizer state, best-so-far and unlogged epochs back; training is backed
    up every trainer.backup_interval_s (per-epoch metrics go out with each backup, so a killed run
    resumes without gaps); a stop saves one more backup; a finished run's folder is marked so."""
    from dlrun import console
    from dlrun.training.extensions import Extension

    cfg, chief, resume = ctx.cfg, ctx.chief, ctx.resume
    if not (cfg.trainer.backup and chief) and resume is None:
        return None

    class BackupExtension(Extension):
        saver = None

        def callbacks(self, ctx) -> list:
            model, run, tracker = ctx.model, ctx.run, ctx.tracker
            if not (cfg.trainer.backup and chief and ctx.task.resumable and model is not None
                    and hasattr(model, "fit")):
                if resume is not None:
                    raise DlrunError(f"task '{ctx.task_name}' cannot resume from a backup",
                                     "trainer.resume works for Keras-fit tasks")
                return []
            if resume is not None:
                self._resume(ctx)
            self.saver = callback(ctx.workdir / FOLDER, float(cfg.trainer.backup_interval_s), tracker.run_id,
                                  own_overrides(ctx.overrides), run.best, tracker.flush,
                                  on_begin=lambda: setattr(tracker, "hold", True))
            return [self.saver]

        def _resume(self, ctx) -> None:
            tracker, run = ctx.tracker, ctx.run
            name = f"run {resume.run_id}" if resume.run_id else "the run"
            if tracker.resumed_status == "RUNNING":  # nothing ended it: killed, or its machine lost
                name += " (left RUNNING by a process that is gone)"
            if not resume.has_model:
                console.console.print(f"{name} stopped before its first backup: training it again from epoch 0 "
                                      f"in the same MLflow run ({resume.run_dir})")
                return
            with ctx.strategy.scope():
                ctx.model = restore(resume, ctx.model, run.best)
            run.initial_epoch = resume.epochs_done
            # a training key every epoch logs: "loss", or a GAN's "d_loss" (no single loss)
            key = next((k for k in next(iter(resume.logs.values()), {}) if not k.startswith("val_")), "loss")
            for epoch, logs in sorted(unlogged(resume, tracker.last_step(f"train/{key}")).items()):
                tracker.log_epoch(epoch - 1, logs)
            tracker.flush()
            console.console.print(f"resuming after epoch {resume.epochs_done} of {name} ({resume.run_dir})")

        def stopped(self, ctx) -> None:
            if self.saver is not None:
                self.saver.save()

        def finished(self, ctx) -> None:
            if cfg.trainer.backup and chief:
                mark_finished(ctx.workdir)

    return BackupExtension()

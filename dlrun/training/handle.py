"""The runner's side of the run contract: the `RunHandle` a task's `fit` receives.

It owns the run's Keras callbacks (checkpoint, early stopping, LR on plateau, progress and
MLflow logging per epoch), the best-model keeper, the stop flag set by Ctrl-C or SIGTERM, and
buffered metric logging in any step unit. A custom loop (dlrun/rl/learn.py) drives the same
callbacks through `begin`, `end_epoch` and `end`, so they mean the same there. What it shows
and where it logs come in as plain functions from the runner, so neither tasks nor this module
import MLflow or rich.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dlrun.contract import Fit, Objective
from dlrun.errors import DlrunError
from dlrun.training.callbacks import (
    NAN_HINT,
    BestKeeper,
    epoch_end,
    nan_guard,
    not_finite_loss,
    trainer_callbacks,
)


class Handle:
    """A RunHandle (see contract.py) for one training run."""

    def __init__(self, trainer, workdir: Path, objective: Objective, has_val: bool, is_chief: bool = True,
                 log: Callable[[int, dict], None] | None = None,
                 log_epoch: Callable[[int, dict], None] | None = None,
                 progress: Callable[[int, str], object] | None = None,
                 log_keras: Callable[[int, dict], None] | None = None):
        """log(step, metrics): MLflow names as they are; log_epoch(epoch, logs) and
        log_keras(step, logs): Keras-style names (loss, val_loss), which the tracker files under
        train/ and val/, at epoch + 1 or at `step`."""
        self.trainer, self.workdir, self.objective, self.is_chief = trainer, workdir, objective, is_chief
        self._log = log or (lambda step, metrics: None)
        self._log_epoch = log_epoch or (lambda epoch, logs: None)
        self._log_keras = log_keras or (lambda step, logs: None)
        self._progress_factory = progress
        self._bar = None
        self._model = None
        self.stop_reason: str | None = None
        self._epoch_steps: dict[int, int] = {}  # custom loops: the step of each evaluation "epoch"
        self.callbacks, keras_best = trainer_callbacks(trainer, workdir, has_val, objective, save=is_chief,
                                                       step_of=lambda epoch: self._epoch_steps.get(epoch, epoch + 1))
        self.best: BestKeeper | None = keras_best.best if keras_best is not None else None
        self._fit_only = [nan_guard(), epoch_end(self._on_epoch)]  # per batch, and logging at epoch + 1
        self.callbacks += self._fit_only
        self._custom: list = []
        self.global_batch = int(trainer.batch_size)  # the runner sets batch_size x replicas
        self.initial_epoch = 0  # a resumed run starts after its backup's epochs

    # -- for the runner -------------------------------------------------------------------
    def attach(self, model) -> None:
        """The model whose `stop_training` a stop request sets (Keras stops after the current step)."""
        self._model = model

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        if self._model is not None:
            self._model.stop_training = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.best is not None:
            self.best.finish()

    # -- the RunHandle protocol -----------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def log(self, step: int, metrics: dict) -> None:
        self._log(int(step), {k: float(v) for k, v in metrics.items() if v is not None})

    def log_keras(self, step: int, logs: dict) -> None:
        self._log_keras(int(step), {k: float(v) for k, v in logs.items() if v is not None})

    # -- custom loops: the run's Keras callbacks at the loop's own evaluations -------------
    def begin(self, model) -> None:
        """A custom loop starts training `model`: the run's callbacks (best checkpoint, early
        stopping, Optuna, TensorBoard, ...; not the fit-only NaN guard and epoch logger) get it
        and `on_train_begin`, as Keras' fit does."""
        self._model = model
        model.stop_training = False
        if not hasattr(model, "optimizer"):  # never compiled (the agent owns its optimizers): callbacks
            model.optimizer = None  # that look for a learning rate to log (TensorBoard) find none
        self._custom = [cb for cb in self.callbacks if not any(cb is f for f in self._fit_only)]
        for cb in self._custom:
            cb.set_model(model)
            cb.on_train_begin()

    def end_epoch(self, epoch: int, step: int, logs: dict) -> None:
        """Evaluation number `epoch` (0-based) of a custom loop, done at `step` (its own unit),
        with Keras-style logs (`loss`, `val_mean_return`): MLflow gets them at `step`, the
        callbacks `on_epoch_end(epoch, logs)` (the best checkpoint records `step`)."""
        self._epoch_steps[int(epoch)] = int(step)
        self.log_keras(step, logs)
        for cb in self._custom:
            cb.on_epoch_end(int(epoch), dict(logs))

    def end(self) -> None:
        """The custom loop ended: `on_train_end` (early stopping restores its best weights,
        the checkpoint writes its file)."""
        for cb in self._custom:
            cb.on_train_end()

    def progress(self, total: int, unit: str) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = self._progress_factory(int(total), unit) if self._progress_factory else None

    def advance(self, done: int, metrics: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.update(int(done), metrics or {})

    def keep_best(self, model, value: float, step: int) -> bool:
        if self.best is None:
            return False
        return self.best.offer(model, value, step)

    def fit_result(self, history: dict, unit: str = "epoch", steps=None, seen=None) -> Fit:
        b = self.best
        return Fit(history={k: [float(v) for v in vals] for k, vals in history.items()}, unit=unit, steps=steps,
                   seen=seen, best_value=b.value if b else None, best_step=b.step if b else None)

    # -- Keras epoch end -------------------------------------------------------------------
    def _on_epoch(self, epoch: int, logs: dict) -> None:
        bad = not_finite_loss(logs)
        if bad is not None:
            if self._model is not None:
                self._model.stop_training = True
            raise DlrunError(f"{bad} in epoch {epoch + 1}", NAN_HINT)
        self.advance(epoch + 1, logs)
        self._log_epoch(epoch, logs)


def keras_fit(cfg, model, data, run: Handle, first: tuple = ()) -> Fit:
    """The default `Task.fit`: Keras fit (or the explicit GradientTape loop) with the run's callbacks.

    `first`: the task's own callbacks, run before the run's at each epoch end (a task that adds
    whole-pass validation metrics to the logs: training.callbacks.epoch_metrics)."""
    from dlrun.training.loop import fit

    epochs = int(cfg.trainer.epochs)
    run.progress(epochs, "epoch")
    history = fit(cfg, model, data, [*first, *run.callbacks], initial_epoch=run.initial_epoch)
    n = len(next(iter(history.values()), []))
    seen = None
    if data.info.steps_per_epoch and n:
        per_epoch = data.info.steps_per_epoch * run.global_batch
        seen = min(data.info.sizes.get("train") or per_epoch, per_epoch) * n
    return run.fit_result(history, "epoch", seen=seen)

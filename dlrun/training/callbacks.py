"""Keras callbacks from the trainer config: early stopping, best-model checkpoint, LR on plateau.

Every monitored metric has an explicit direction: `mode: min|max`, or under `mode: auto` the
task's objective, a name Keras would call a loss, or a metric whose direction is known
(the one table, contract.maximized); anything else is a one-line error naming the key, as Keras'
own EarlyStopping refuses to guess. Progress display and MLflow logging are added by the run
handle; all of them act once per epoch, never per batch, so they cost nothing in throughput.
"""

from __future__ import annotations

import math
from pathlib import Path

from dlrun.contract import Objective, maximized, metric_base
from dlrun.errors import DlrunError

MODES = ("auto", "min", "max")


def resolve_monitor(key: str, monitor: str, mode: str, objective: Objective, has_val: bool) -> tuple[str, bool]:
    """(metric name in Keras logs, maximise?) for the config key `key` (e.g. trainer.checkpoint).

    `monitor: auto` is the task's objective on validation data (training data without it).
    """
    if mode not in MODES:
        raise DlrunError(f"{key}.mode: unknown value '{mode}'", "valid: auto, min, max")
    name = objective.val if monitor == "auto" else str(monitor)
    if not has_val and name.startswith("val_"):  # without a validation split, watch the training counterpart
        name = name[len("val_"):]
    if mode != "auto":
        return name, mode == "max"
    base = metric_base(name)
    if base == objective.name:
        return name, objective.maximize
    up = maximized(base)
    if up is not None:
        return name, up
    raise DlrunError(f"{key}.monitor '{name}': cannot tell whether to minimise or maximise it",
                     f"set {key}.mode=min or {key}.mode=max")


def trainer_callbacks(trainer, workdir: Path, has_val: bool, objective: Objective, save: bool = True,
                      step_of=None) -> tuple[list, object]:
    """(callbacks, the best-model keeper or None) for a Keras fit. `step_of(epoch)`: the step the
    best checkpoint records for an epoch (epoch + 1 unless a custom loop says otherwise)."""
    import keras

    callbacks = []
    es = trainer.early_stopping
    if es.enabled:
        name, up = resolve_monitor("trainer.early_stopping", es.monitor, es.mode, objective, has_val)
        chance = objective.chance if name == objective.val and up else None
        callbacks.append(early_stopping(chance)(
            monitor=name, mode="max" if up else "min", patience=int(es.patience), min_delta=float(es.min_delta),
            restore_best_weights=bool(es.restore_best_weights), verbose=0))
    s = trainer.lr_schedule
    if s.name == "reduce_on_plateau":
        name, up = resolve_monitor("trainer.lr_schedule", s.monitor, s.mode, objective, has_val)
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=name, mode="max" if up else "min", factor=float(s.factor), patience=int(s.patience),
            min_lr=float(s.min_lr), verbose=0))
    ck = trainer.checkpoint
    best = None
    if ck.enabled:
        name, up = resolve_monitor("trainer.checkpoint", ck.monitor, ck.mode, objective, has_val)
        best = best_checkpoint(workdir / "best.keras" if save else None, name, up, float(ck.min_interval_s), step_of)
        callbacks.append(best)
    return callbacks, best


def early_stopping(chance: float | None):
    """Keras' EarlyStopping, or where the objective's chance level is known, one that does not
    count epochs against the patience while the best value is still at chance: a sequence
    model on few long texts often sits at chance for several epochs before it starts to learn,
    and one bad epoch must not end it (trainer.epochs still bounds the run)."""
    import keras

    if chance is None:
        return keras.callbacks.EarlyStopping

    class PastChance(keras.callbacks.EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.best is not None and self.best <= chance + 1e-9:
                self.wait = 0  # not yet left chance: no epoch counts against the patience
                self.model.stop_training = False

    return PastChance


def tensorboard_extension(ctx):
    """tracking.tensorboard: the TensorBoard callback, its event files logged as artifacts at the end."""
    from dlrun.training.extensions import Extension

    if not ctx.cfg.tracking.tensorboard:
        return None

    class TensorBoardExtension(Extension):
        def callbacks(self, ctx) -> list:
            return [tensorboard(ctx.workdir / "tensorboard")]

        def finished(self, ctx) -> None:
            ctx.tracker.log_path(ctx.workdir / "tensorboard", "tensorboard")

    return TensorBoardExtension()


def tensorboard(log_dir: Path):
    """Keras' TensorBoard callback, per-epoch scalars only. It has per-batch hooks, so it turns
    off Keras' asynchronous batch dispatch: small models train slower while it is on."""
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is None:
        raise DlrunError("tracking.tensorboard=true needs the tensorboard package",
                         'pip install "dlrun[tensorboard]" (or pip install tensorboard)')
    return keras.callbacks.TensorBoard(str(log_dir), histogram_freq=0, write_graph=False,
                                       update_freq="epoch", profile_batch=0)


class BestKeeper:
    """The best model of a run by one metric: weights in memory, a .keras file on disk.

    Shared by the Keras callback below and by custom loops (RunHandle.keep_best). Disk writes
    happen at most every `min_interval_s` seconds and at `finish()`, so fast epochs are not
    slowed by saving; `path=None` keeps memory only (workers of a multi-worker run).
    """

    def __init__(self, path: Path | None, monitor: str, maximize: bool, min_interval_s: float = 30.0):
        import time

        self.path, self.monitor, self.maximize = path, monitor, maximize
        self.min_interval_s = min_interval_s
        self.value: float | None = None
        self.step: int | None = None
        self.tie: float | None = None  # the kept step's tie-breaker (lower wins among equal values)
        self.weights = None  # numpy copies of the best weights
        self.model = None  # the model the weights belong to
        self._dirty = False
        self._last_write = time.monotonic()  # short runs write once, at the end

    def offer(self, model, value: float, step: int, tie: float | None = None) -> bool:
        """Keep the model if `value` beats the best so far, or equals it with a lower `tie`
        (the validation loss: a discrete metric such as accuracy often repeats while the loss
        still falls, and the first epoch of a tie is the least trained); True when kept."""
        import math
        import time

        if value is None or not math.isfinite(float(value)):
            return False
        value = float(value)
        tie = float(tie) if tie is not None and math.isfinite(float(tie)) else None
        if self.value is not None and not (value > self.value if self.maximize else value < self.value):
            ties = math.isclose(value, self.value, rel_tol=1e-12, abs_tol=1e-12)
            if not (ties and tie is not None and self.tie is not None and tie < self.tie):
                return False
        self.value, self.step, self.model, self.tie = value, step, model, tie
        self.weights = model.get_weights()
        self._dirty = True
        if self.path is not None and time.monotonic() - self._last_write >= self.min_interval_s:
            self._write()
        return True

    def _write(self) -> None:
        import time

        if self.path is None or self.model is None or self.weights is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        current = self.model.get_weights()
        self.model.set_weights(self.weights)
        try:
            self.model.save(self.path)
        finally:
            self.model.set_weights(current)
        self._dirty, self._last_write = False, time.monotonic()

    def finish(self) -> None:
        """Write the best state if it is not on disk yet."""
        if self._dirty:
            self._write()

    def restore(self, model) -> bool:
        """Put the best weights into `model`; False if there are none."""
        if self.weights is None:
            return False
        model.set_weights(self.weights)
        return True


def best_checkpoint(path: Path | None, monitor: str, maximize: bool, min_interval_s: float, step_of=None):
    """A Keras callback keeping the best model by `monitor`, acting at epoch ends only; the kept
    step is `step_of(epoch)` (default epoch + 1).

    Keras' ModelCheckpoint has a per-batch hook, which turns off Keras' asynchronous batch
    dispatch and costs small models a large share of their throughput; this one has none.
    A monitor missing from the logs is a one-line error listing the logged names. Epochs with
    the same monitored value are told apart by the validation loss (lower wins).
    """
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = BestKeeper(path, monitor, maximize, min_interval_s)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if monitor not in logs:
                raise DlrunError(f"trainer.checkpoint.monitor '{monitor}' is not a logged metric",
                                 f"logged: {', '.join(sorted(logs))}")
            tie = logs.get("val_loss") if monitor != "val_loss" else None
            self.best.offer(self.model, logs[monitor], step_of(epoch) if step_of else epoch + 1, tie)

        def on_train_end(self, logs=None):
            self.best.finish()

    return BestCheckpoint()


NAN_HINT = "lower trainer.learning_rate or set trainer.clipnorm (gradient clipping)"


def nan_guard():
    """A Keras callback that fails the run at the first batch whose loss is not finite.

    Keras' TerminateOnNaN only stops training, and the run would then finish with a useless
    model; this one raises a DlrunError naming the loss, the epoch and the batch (Python,
    between steps). Every loss in the logs is watched: `loss`, and the parts a model with its
    own train_step reports (a GAN's `d_loss` and `g_loss`, which have no sum worth logging).
    """
    import keras

    class NanGuard(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            bad = not_finite_loss(logs)
            if bad is not None:
                self.model.stop_training = True
                raise DlrunError(f"{bad} at epoch {self.epoch + 1}, batch {batch + 1}", NAN_HINT)

    return NanGuard()


def not_finite_loss(logs) -> str | None:
    """'<name> became NaN' (or infinite) for the first loss in Keras logs that is not finite, else None."""
    for name, value in (logs or {}).items():
        if (name == "loss" or name.endswith("_loss")) and not name.startswith("val_") and value is not None \
                and not math.isfinite(float(value)):
            return f"{name} became {'NaN' if math.isnan(float(value)) else 'infinite'}"
    return None


def epoch_metrics(compute):
    """A Keras callback adding `compute(model)` ({name: value}) to every epoch's logs.

    For validation metrics that need a whole pass and Python after it (COCO mAP with
    pycocotools, a Frechet distance between feature sets): a keras.metrics.Metric updates
    per batch inside the compiled step and cannot run them. Put it before the run's callbacks
    (keras_fit's `first`): Keras hands every callback the same logs dict, so the checkpoint,
    early stopping, LR on plateau, pruning, backup and MLflow logging see `val_map` like any
    `val_` metric of Keras' own, and fit's History keeps it.
    """
    import keras

    class EpochMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs.update({k: float(v) for k, v in compute(self.model).items()})

    return EpochMetrics()


def epoch_end(fn):
    """A Keras callback calling fn(epoch, logs) at each epoch end (no per-batch hook)."""
    import keras

    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: fn(epoch, dict(logs or {})))

"""Keras callbacks from the trainer config: early stopping, best-model checkpoint, LR on plateau.

Progress display and MLflow logging are added by the runner (console.py, tracking.py); all of
them act once per epoch, never per batch, so they cost nothing measurable in throughput.
"""

from __future__ import annotations

from pathlib import Path


def trainer_callbacks(trainer, workdir: Path, has_val: bool) -> list:
    import keras

    callbacks = []

    def monitor(name: str) -> str:
        # Without a validation split, watch the training counterpart.
        return name if has_val or not name.startswith("val_") else name[len("val_"):]

    es = trainer.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor(es.monitor), patience=int(es.patience), min_delta=float(es.min_delta),
            restore_best_weights=bool(es.restore_best_weights), verbose=0))
    if trainer.lr_schedule.name == "reduce_on_plateau":
        s = trainer.lr_schedule
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor(s.monitor), factor=float(s.factor), patience=int(s.patience),
            min_lr=float(s.min_lr), verbose=0))
    ck = trainer.checkpoint
    if ck.enabled:
        workdir.mkdir(parents=True, exist_ok=True)
        callbacks.append(best_checkpoint(workdir / "best.keras", monitor(ck.monitor), bool(ck.save_best_only),
                                         float(ck.min_interval_s)))
    return callbacks


def tensorboard(log_dir: Path):
    """Keras' TensorBoard callback, per-epoch scalars only. It has per-batch hooks, so it turns
    off Keras' asynchronous batch dispatch: small models train slower while it is on."""
    import importlib.util

    import keras

    from dlrun.errors import DlrunError

    if importlib.util.find_spec("tensorboard") is None:
        raise DlrunError("tracking.tensorboard=true needs the tensorboard package",
                         'pip install "dlrun[tensorboard]" (or pip install tensorboard)')
    return keras.callbacks.TensorBoard(str(log_dir), histogram_freq=0, write_graph=False,
                                       update_freq="epoch", profile_batch=0)


def best_checkpoint(path: Path, monitor: str, save_best_only: bool, min_interval_s: float):
    """Keep the best model (by `monitor`) as a .keras file, acting at epoch ends only.

    Keras' ModelCheckpoint has a per-batch hook, which turns off Keras' asynchronous batch
    dispatch and costs small models a large share of their throughput. This one keeps the
    best weights in memory, writes them at most every `min_interval_s` seconds, and always
    writes the best state when training ends (the final weights are restored afterwards).
    """
    import time

    import keras
    import numpy as np

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = np.inf if not _maximise(monitor) else -np.inf
            self.best_weights = None
            self.last_write = 0.0

        def on_train_begin(self, logs=None):
            self.last_write = time.monotonic()  # short runs write once, at the end

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            better = value is not None and (value > self.best if _maximise(monitor) else value < self.best)
            if save_best_only and not better:
                return
            if value is not None and better:
                self.best = value
            now = time.monotonic()
            if now - self.last_write >= min_interval_s:
                self.model.save(path)
                self.last_write, self.best_weights = now, None
            else:
                self.best_weights = self.model.get_weights()  # numpy copies

        def on_train_end(self, logs=None):
            if self.best_weights is None:
                return
            final = self.model.get_weights()
            self.model.set_weights(self.best_weights)
            self.model.save(path)
            self.model.set_weights(final)
            self.best_weights = None

    return BestCheckpoint()


def _maximise(monitor: str) -> bool:
    return any(k in monitor for k in ("acc", "auc", "precision", "recall", "f1", "r2"))


def epoch_end(fn):
    """A Keras callback calling fn(epoch, logs) at each epoch end (no per-batch hook)."""
    import keras

    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: fn(epoch, dict(logs or {})))

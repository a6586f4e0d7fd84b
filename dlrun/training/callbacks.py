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
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(workdir / "best.keras"), monitor=monitor(ck.monitor),
            save_best_only=bool(ck.save_best_only), verbose=0))
    return callbacks


class EpochEnd:
    """Adapter: a plain function called as fn(epoch, logs) at each epoch end, as a Keras callback."""

    def __new__(cls, fn):
        import keras

        class _CB(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                fn(epoch, dict(logs or {}))

        return _CB()

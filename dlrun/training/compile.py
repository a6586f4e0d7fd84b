"""Optimizer, learning-rate schedule, loss and metrics from the config -> model.compile."""

from __future__ import annotations

from dlrun.config import OPTIMIZERS
from dlrun.models.heads import head_spec, metrics_for


def make_optimizer(trainer, steps_per_epoch: int | None = None):
    """The optimizer named by trainer.optimizer with trainer.learning_rate (and schedule)."""
    import keras

    lr = float(trainer.learning_rate)
    schedule = trainer.lr_schedule
    if schedule.name == "cosine":
        steps = max(1, int(trainer.epochs) * int(steps_per_epoch or 1))
        alpha = float(schedule.min_lr) / lr if lr else 0.0
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=alpha)
    extra = {"adam": {"beta_1": float(trainer.beta_1)},
             "adamw": {"weight_decay": float(trainer.weight_decay), "beta_1": float(trainer.beta_1)},
             "sgd": {"momentum": float(trainer.momentum)},
             "rmsprop": {"momentum": float(trainer.momentum)}}.get(trainer.optimizer, {})
    if trainer.clipnorm:
        extra["clipnorm"] = float(trainer.clipnorm)
    return getattr(keras.optimizers, OPTIMIZERS[trainer.optimizer])(lr, **extra)


def compile_model(model, cfg, info, loss=None, metrics=None):
    """Compile with the optimizer from cfg.trainer and the loss/metrics matching the target."""
    if loss is None:
        _, loss, _ = head_spec(info, cfg.model)
    model.compile(
        optimizer=make_optimizer(cfg.trainer, info.steps_per_epoch),
        loss=loss,
        metrics=metrics if metrics is not None else metrics_for(info, int(cfg.task.get("top_k", 3))),
        jit_compile=bool(cfg.trainer.jit_compile),
        steps_per_execution=int(cfg.trainer.steps_per_execution),
    )
    return model

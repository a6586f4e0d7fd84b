"""Adversarial training (Goodfellow et al. 2015; Madry et al. 2018): `task.adversarial.eps > 0`
replaces a share (`mix`) of every training batch by its FGSM or PGD version, made against the
current weights with the model's own compiled loss, before Keras' usual train step.

The network becomes an `AdversarialTraining` model: the same functional graph and layers, only
its `train_step` differs, so Keras fit, the run's callbacks (checkpoint, early stopping, backup,
Ctrl-C), distribution strategies and mixed precision work unchanged; validation and test data
stay clean. The served model is `plain(model)`: the same layers and weights as a plain
functional model, which loads without this module. Checkpoints and backups keep the class
(registered below) so a stopped adversarial run resumes as one.

Examples are made with the network in inference mode (BatchNorm statistics and dropout as at
test time, no side effects), for the whole batch, and the first `mix` share of the (shuffled)
batch is swapped: fixed shapes, so it also compiles with XLA. Budgets are in the network's input
units, [0, 1] pixels for images: the same units as `dlrun attack eps=`.
"""

from __future__ import annotations

import keras

from dlrun.errors import DlrunError
from dlrun.explain.attack import fgsm, pgd

METHODS = ("fgsm", "pgd")


def settings(cfg) -> dict | None:
    """The checked task.adversarial block, or None when adversarial training is off (eps 0 or no block)."""
    block = cfg.task.get("adversarial") if cfg.get("task") is not None else None
    if not block or not float(block.get("eps", 0.0) or 0.0):
        return None
    s = {"eps": float(block.eps), "method": str(block.method), "mix": float(block.mix),
         "pgd_steps": int(block.pgd_steps), "pgd_step_size": float(block.pgd_step_size)}
    if not 0 < s["eps"] <= 1:
        raise DlrunError(f"task.adversarial.eps: must lie in [0, 1] (pixel units), got {s['eps']}", "0 turns it off")
    if s["method"] not in METHODS:
        raise DlrunError(f"task.adversarial.method: unknown method '{s['method']}'", f"valid: {', '.join(METHODS)}")
    if not 0 < s["mix"] <= 1:
        raise DlrunError(f"task.adversarial.mix: must lie in (0, 1], got {s['mix']}",
                         "the share of each batch replaced by adversarial examples")
    if s["pgd_steps"] < 1 or not 0 < s["pgd_step_size"] <= 1:
        raise DlrunError("task.adversarial: pgd_steps must be >= 1 and pgd_step_size in (0, 1] (a fraction of eps)")
    if str(cfg.trainer.loop) == "custom":
        raise DlrunError("task.adversarial needs trainer.loop=fit", "the custom loop has no adversarial step")
    return s


def wrap(model, cfg):
    """`model` with the adversarial train step when task.adversarial is on (before compiling);
    `model` itself otherwise."""
    s = settings(cfg)
    if s is None:
        return model
    return AdversarialTraining(model.input, model.output, name=model.name, adversarial=s)


def plain(model):
    """The network without its adversarial train step (what is served): a functional model over
    the same layers and weights. Any other model is returned as is."""
    if isinstance(model, AdversarialTraining):
        return keras.Model(model.input, model.output, name=model.name)
    return model


@keras.saving.register_keras_serializable(package="dlrun")
class AdversarialTraining(keras.Model):
    """A functional network whose fit step trains on a mix of clean and adversarial examples."""

    def __init__(self, *args, adversarial: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.adversarial = dict(adversarial or {})

    def get_config(self):
        return {**super().get_config(), "adversarial": self.adversarial}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        s, ops = self.adversarial, keras.ops
        loss_fn = keras.losses.get(self.loss)  # the compiled loss, per example

        def loss_of(z):
            return loss_fn(y, self(z, training=False))

        if s["method"] == "pgd":
            adv = pgd(loss_of, x, s["eps"], s["pgd_steps"], s["pgd_step_size"] * s["eps"])
        else:
            adv = fgsm(loss_of, x, s["eps"])
        n = ops.shape(x)[0]
        swapped = ops.arange(n) < ops.cast(ops.round(s["mix"] * ops.cast(n, "float32")), "int32")
        swapped = ops.reshape(swapped, (-1,) + (1,) * (len(x.shape) - 1))
        x = ops.where(swapped, ops.stop_gradient(adv), x)
        return super().train_step((x, y, sample_weight))

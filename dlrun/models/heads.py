"""Output layer, loss and metrics that match the task's target (course Day 1).

regression -> linear + MSE; binary -> sigmoid + binary cross-entropy; multiclass -> softmax +
(sparse) categorical cross-entropy; multilabel -> sigmoid + binary cross-entropy per output.
An explicit `model.loss` that does not fit the target is an error.
"""

from __future__ import annotations

from dlrun.errors import DlrunError

# target -> (activation, allowed losses; the first is the default)
HEADS = {
    "multiclass": ("softmax", ("sparse_categorical_crossentropy",)),  # labels are class indices
    "binary": ("sigmoid", ("binary_crossentropy", "binary_focal_crossentropy", "hinge")),
    "multilabel": ("sigmoid", ("binary_crossentropy", "binary_focal_crossentropy")),
    "regression": ("linear", ("mse", "mae", "huber", "log_cosh", "mape")),
}


def head_spec(info, model_cfg) -> tuple[str, str, int]:
    """(activation, loss name, units) for this target, honouring an explicit model.loss."""
    if info.target not in HEADS:
        raise DlrunError(f"unknown target kind '{info.target}'", f"valid: {', '.join(HEADS)}")
    activation, losses = HEADS[info.target]
    loss = model_cfg.get("loss", "auto") or "auto"
    if loss == "auto":
        loss = losses[0]
    elif loss not in losses:
        raise DlrunError(
            f"model.loss '{loss}' does not match a {info.target} target",
            f"use one of: {', '.join(losses)} (or auto)",
        )
    units = {"multiclass": info.num_classes, "multilabel": info.num_classes, "binary": 1}.get(
        info.target, info.output_dim
    )
    return activation, loss, int(units)


def output_head(x, info, model_cfg):
    """Append Dense(units) + the matching activation (kept float32 under mixed precision)."""
    import keras

    activation, _, units = head_spec(info, model_cfg)
    x = keras.layers.Dense(units, name="head")(x)
    return keras.layers.Activation(activation, dtype="float32", name="output")(x)


def metrics_for(info) -> list:
    """Keras metrics reported per epoch for this target."""
    import keras

    if info.target == "multiclass":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if (info.num_classes or 0) > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3_accuracy"))
        return metrics
    if info.target in ("binary", "multilabel"):
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]

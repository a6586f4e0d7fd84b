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


def dense_stack(x, units, activation="relu", dropout: float = 0.0, batch_norm: bool = False, reg=None,
                name: str = "dense"):
    """Dense layers of `units` (a list), each followed by (BatchNorm), activation and (Dropout).

    With batch_norm the order is Dense -> BatchNorm -> Dropout -> activation (the course's
    MNIST MLP order); without it Dense(activation) -> Dropout. The one dense-stack builder of
    every model family (MLP body, CNN classifier, RNN/CNN forecaster heads).
    """
    import keras

    for i, n in enumerate(units or []):
        if batch_norm:
            x = keras.layers.Dense(int(n), kernel_regularizer=reg, name=f"{name}_{i}")(x)
            x = keras.layers.BatchNormalization(name=f"{name}_bn_{i}")(x)
            if dropout:
                x = keras.layers.Dropout(float(dropout), name=f"{name}_dropout_{i}")(x)
            x = keras.layers.Activation(activation, name=f"{name}_act_{i}")(x)
        else:
            x = keras.layers.Dense(int(n), activation=activation, kernel_regularizer=reg, name=f"{name}_{i}")(x)
            if dropout:
                x = keras.layers.Dropout(float(dropout), name=f"{name}_dropout_{i}")(x)
    return x


def output_head(x, info, model_cfg):
    """Append Dense(units) + the matching activation (kept float32 under mixed precision)."""
    import keras

    activation, _, units = head_spec(info, model_cfg)
    x = keras.layers.Dense(units, name="head")(x)
    return keras.layers.Activation(activation, dtype="float32", name="output")(x)


def metrics_for(info, top_k: int = 3) -> list:
    """Keras metrics reported per epoch for this target (top-k accuracy with more than 5 classes;
    task.top_k, the same k as the test report)."""
    import keras

    if info.target == "multiclass":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if (info.num_classes or 0) > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name=f"top{top_k}_accuracy"))
        return metrics
    if info.target in ("binary", "multilabel"):
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]

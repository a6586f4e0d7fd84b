"""Multi-layer perceptron: tabular features, flattened images or flattened windows."""

from __future__ import annotations

from dlrun.models.heads import dense_stack, output_head
from dlrun.registry import MODELS


def regularizer(model_cfg):
    import keras

    l1, l2 = float(model_cfg.l1), float(model_cfg.l2)
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


@MODELS.register("mlp", "Dense layers (units list, activation, dropout, batch norm, L1/L2)",
                 tags=("tabular", "image", "sequence"))
def build_mlp(model_cfg, info):
    """Input -> [Dense -> (BatchNorm) -> activation -> (Dropout)] x N -> output head.

    With batch_norm the order is Dense -> BatchNorm -> Dropout -> activation, the course's
    MNIST MLP order; without it Dense(activation) -> Dropout.
    """
    import keras

    inputs = keras.Input(shape=tuple(info.input_shape), name="features")
    x = keras.layers.Flatten()(inputs) if len(info.input_shape) > 1 else inputs
    x = dense_stack(x, model_cfg.hidden_units, model_cfg.activation, float(model_cfg.dropout),
                    bool(model_cfg.batch_norm), regularizer(model_cfg))
    outputs = output_head(x, info, model_cfg)
    if model_cfg.residual:  # sequence: predict the change from the last value
        from dlrun.models.sequence import forecast_output

        outputs = forecast_output(inputs, outputs, info, model_cfg)
    return keras.Model(inputs, outputs, name="mlp")

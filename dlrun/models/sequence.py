"""Forecasters for windows of shape (window, features) -> `info.output_dim` (= horizon) values.

Recurrent (SimpleRNN, LSTM, GRU: stacked, bidirectional, dropout), 1-D convolutional, and the
course's encoder-decoder (seq2seq). The MLP in mlp.py serves windows too (it flattens them).
Only stock Keras layers are used, so a saved .keras file reloads without custom objects.
"""

from __future__ import annotations

from dlrun.errors import DlrunError
from dlrun.models.heads import dense_stack, head_spec, output_head
from dlrun.registry import MODELS

RNN_LAYERS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def _units(model_cfg, key: str = "units", layers_key: str | None = "layers") -> list[int]:
    """`units` as a list: a list gives one layer per entry, an int repeats `layers` times."""
    value = model_cfg.get(key)
    if value is None:
        raise DlrunError(f"model.{key} is not set")
    if isinstance(value, int):
        units = [value] * int(model_cfg.get(layers_key, 1) if layers_key else 1)
    else:
        units = [int(u) for u in value]
    if not units or any(u < 1 for u in units):
        raise DlrunError(f"model.{key} must be positive unit counts, got {value}")
    return units


def forecast_output(inputs, outputs, info, model_cfg):
    """The model, with `residual: true` forecasting the change from the last observed target.

    forecast = head + last input value of the target (repeated over the horizon), built from
    stock layers: Cropping1D keeps the last step and a frozen one-hot Dense picks the target
    column. It keeps trending series in range: the network learns steps, not levels.
    `residual: auto` does this when the target is among the inputs.
    """
    import keras

    residual = model_cfg.residual
    if not residual:
        return outputs
    index = getattr(info, "target_index", None)
    if index is None and str(residual) == "auto":
        return outputs
    if index is None:
        raise DlrunError("model.residual needs the target among the inputs",
                         "add the target column to data.features, or set model.residual=false")
    steps, n_in = int(info.input_shape[0]), int(info.input_shape[1])
    horizon = int(outputs.shape[-1])
    kernel = [[1.0 if i == int(index) else 0.0] * horizon for i in range(n_in)]
    last = keras.layers.Cropping1D((steps - 1, 0), name="last_step")(inputs)
    last = keras.layers.Reshape((n_in,), name="last_values")(last)
    last = keras.layers.Dense(horizon, use_bias=False, trainable=False, dtype="float32", name="last_target",
                              kernel_initializer=keras.initializers.Constant(kernel))(last)
    return keras.layers.Add(dtype="float32", name="forecast")([outputs, last])


def _dense_stack(x, model_cfg):
    return dense_stack(x, model_cfg.get("dense_units"), model_cfg.dense_activation,
                       float(model_cfg.dropout))


def build_rnn(model_cfg, info, kind: str):
    """Input -> [RNN (bidirectional)] x N -> (Dense x M) -> head.

    Every recurrent layer but the last returns sequences so the next one can read them;
    `return_sequences: true` makes the last one return all steps too (flattened into the head).
    """
    import keras

    layer_cls = getattr(keras.layers, RNN_LAYERS[kind])
    inputs = keras.Input(shape=tuple(info.input_shape), name="window")
    units = _units(model_cfg)
    last_sequences = bool(model_cfg.return_sequences)
    x = inputs
    for i, u in enumerate(units):
        layer = layer_cls(
            u,
            activation=model_cfg.activation,
            dropout=float(model_cfg.dropout),
            recurrent_dropout=float(model_cfg.recurrent_dropout),
            return_sequences=i < len(units) - 1 or last_sequences,
            name=f"{kind}_{i}",
        )
        if model_cfg.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)
    if last_sequences:
        x = keras.layers.Flatten(name="flatten")(x)
    x = _dense_stack(x, model_cfg)
    return keras.Model(inputs, forecast_output(inputs, output_head(x, info, model_cfg), info, model_cfg), name=kind)


@MODELS.register("simple_rnn", "SimpleRNN layers (units, layers, dropout, bidirectional)", tags=("sequence",))
def build_simple_rnn(model_cfg, info):
    return build_rnn(model_cfg, info, "simple_rnn")


@MODELS.register("lstm", "LSTM layers (units, layers, dropout, recurrent_dropout, bidirectional)",
                 tags=("sequence",))
def build_lstm(model_cfg, info):
    return build_rnn(model_cfg, info, "lstm")


@MODELS.register("gru", "GRU layers (units, layers, dropout, recurrent_dropout, bidirectional)", tags=("sequence",))
def build_gru(model_cfg, info):
    return build_rnn(model_cfg, info, "gru")


@MODELS.register("conv1d", "1-D CNN forecaster: Conv1D blocks -> pooling -> Dense -> head", tags=("sequence",))
def build_conv1d(model_cfg, info):
    """Input -> [Conv1D -> (MaxPool1D)] x N -> Flatten | GlobalAverage | GlobalMax -> Dense x M -> head.

    A pooling step is skipped when the sequence is already shorter than pool_size.
    """
    import keras

    inputs = keras.Input(shape=tuple(info.input_shape), name="window")
    pool = int(model_cfg.pool_size or 0)
    length = int(info.input_shape[0])
    x = inputs
    for i, filters in enumerate(_units(model_cfg, "filters", None)):
        x = keras.layers.Conv1D(filters, int(model_cfg.kernel_size), padding=model_cfg.padding,
                                activation=model_cfg.activation, name=f"conv_{i}")(x)
        if model_cfg.padding == "valid":
            length = length - int(model_cfg.kernel_size) + 1
            if length < 1:
                raise DlrunError(f"model.kernel_size {model_cfg.kernel_size} is too large for window {info.input_shape[0]}",
                                 "use padding: causal or same, or a smaller kernel")
        if pool > 1 and length >= pool:
            x = keras.layers.MaxPooling1D(pool, name=f"pool_{i}")(x)
            length //= pool
    pooling = str(model_cfg.pooling)
    layers = {"flatten": keras.layers.Flatten, "global_avg": keras.layers.GlobalAveragePooling1D,
              "global_max": keras.layers.GlobalMaxPooling1D}
    if pooling not in layers:
        raise DlrunError(f"model.pooling: unknown value '{pooling}'", f"valid: {', '.join(layers)}")
    x = layers[pooling](name="pooling")(x)
    x = _dense_stack(x, model_cfg)
    return keras.Model(inputs, forecast_output(inputs, output_head(x, info, model_cfg), info, model_cfg),
                       name="conv1d")


@MODELS.register("seq2seq", "Encoder-decoder: LSTM -> Dense latent -> RepeatVector(horizon) -> LSTM -> Dense",
                 tags=("sequence",))
def build_seq2seq(model_cfg, info):
    """The course's encoder-decoder for multi-step forecasts (any input steps -> horizon steps).

    LSTM encoder -> Dense latent layers -> RepeatVector(horizon) -> LSTM decoder returning
    sequences -> TimeDistributed(Dense(1)), reshaped to (horizon,).
    """
    import keras

    activation, _, horizon = head_spec(info, model_cfg)
    inputs = keras.Input(shape=tuple(info.input_shape), name="window")
    dropout = float(model_cfg.dropout)
    recurrent_dropout = float(model_cfg.recurrent_dropout)
    enc = _units(model_cfg, "encoder_units", None)
    x = inputs
    for i, u in enumerate(enc):
        x = keras.layers.LSTM(u, activation=model_cfg.activation, dropout=dropout,
                              recurrent_dropout=recurrent_dropout, return_sequences=i < len(enc) - 1,
                              name=f"encoder_{i}")(x)
    for i, u in enumerate(model_cfg.get("latent_units") or []):
        x = keras.layers.Dense(int(u), activation=model_cfg.latent_activation, name=f"latent_{i}")(x)
    x = keras.layers.RepeatVector(horizon, name="repeat")(x)
    for i, u in enumerate(_units(model_cfg, "decoder_units", None)):
        x = keras.layers.LSTM(u, activation=model_cfg.activation, dropout=dropout,
                              recurrent_dropout=recurrent_dropout, return_sequences=True, name=f"decoder_{i}")(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(1), name="head")(x)
    x = keras.layers.Reshape((horizon,), name="steps")(x)
    outputs = keras.layers.Activation(activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, forecast_output(inputs, outputs, info, model_cfg), name="seq2seq")

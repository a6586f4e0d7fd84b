"""The two ends of the served forecaster (task=sequence): raw windows in, forecasts in the user's
units out, with the target representation of dlrun/data/forecasting.py inside the model.
Hand-written because Keras has no Box-Cox layer; the served model names this module, so it
loads with `dlrun predict` / `mlflow.pyfunc` like the stock layers.

Box-Cox: z = (y^lambda - 1) / lambda, log y for lambda 0 (scipy.special.boxcox's definition);
`lmbda=None` leaves the values as they are.
"""

import keras
from keras import ops

_FLOOR = 1e-12  # a value <= 0 reaching a log/Box-Cox model: clipped instead of NaN


def _boxcox(y, lmbda):
    if lmbda is None:
        return y
    y = ops.maximum(y, _FLOOR)
    return ops.log(y) if lmbda == 0 else (ops.power(y, lmbda) - 1.0) / lmbda


def _inv_boxcox(z, lmbda):
    if lmbda is None:
        return z
    if lmbda == 0:
        return ops.exp(z)
    return ops.power(ops.maximum(lmbda * z + 1.0, 0.0), 1.0 / lmbda)


@keras.saving.register_keras_serializable(package="dlrun_series")
class ForecastInputs(keras.layers.Layer):
    """Raw windows (batch, window, inputs) -> the network's inputs.

    Every input column scaled (value * scale + shift, fitted on the training part; the target's
    column Box-Cox transformed first), plus, when `step_scale` is set, one more channel: the
    target's transformed values minus the window's last one, divided by `step_scale` (a
    window-relative view that a trend cannot carry out of the training range).
    """

    def __init__(self, scale, shift, target_index=None, lmbda=None, step_scale=None, **kw):
        super().__init__(**kw)
        self.scale, self.shift = [float(v) for v in scale], [float(v) for v in shift]
        self.target_index, self.lmbda, self.step_scale = target_index, lmbda, step_scale

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.target_index is not None and self.lmbda is not None:
            i = self.target_index
            z = _boxcox(x[..., i:i + 1], self.lmbda)
            x = ops.concatenate([x[..., :i], z, x[..., i + 1:]], axis=-1)
        scaled = x * ops.convert_to_tensor(self.scale, "float32") + ops.convert_to_tensor(self.shift, "float32")
        if self.step_scale is None:
            return scaled
        z = x[..., self.target_index]
        steps = (z - z[:, -1:]) / self.step_scale
        return ops.concatenate([scaled, steps[..., None]], axis=-1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] + (self.step_scale is not None))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "shift": self.shift, "target_index": self.target_index,
                "lmbda": self.lmbda, "step_scale": self.step_scale}


@keras.saving.register_keras_serializable(package="dlrun_series")
class ForecastOutputs(keras.layers.Layer):
    """[network outputs (batch, horizon), raw windows (batch, window, inputs)] -> forecasts in the
    user's units: inv_boxcox(outputs * scale + z_window @ matrix + offset), z the transformed
    target of the window (the base: last value, value one season back, ... see base_matrix)."""

    def __init__(self, matrix, offset=0.0, scale=1.0, target_index=None, lmbda=None, **kw):
        super().__init__(**kw)
        self.matrix = [[float(v) for v in row] for row in matrix]
        self.offset, self.scale, self.target_index, self.lmbda = float(offset), float(scale), target_index, lmbda

    def call(self, inputs):
        out, x = inputs
        z = ops.cast(out, "float32") * self.scale + self.offset
        if self.target_index is not None and any(v for row in self.matrix for v in row):
            window = _boxcox(ops.cast(x[..., self.target_index], "float32"), self.lmbda)
            z = z + ops.matmul(window, ops.convert_to_tensor(self.matrix, "float32"))
        return _inv_boxcox(z, self.lmbda)

    def compute_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix, "offset": self.offset, "scale": self.scale,
                "target_index": self.target_index, "lmbda": self.lmbda}

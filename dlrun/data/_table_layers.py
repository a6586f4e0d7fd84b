"""The served tabular model's answer to an empty numeric cell (task=tabular, data.missing=impute).

Hand-written because Keras has no imputation layer; the served model names this module, so it
loads with `dlrun predict` / `mlflow.pyfunc` like the stock layers. An empty string cell needs
no layer: it is not in the column's vocabulary, so StringLookup maps it to the out-of-vocabulary
slot, which the table model keeps as the `<missing>` category when training rows had empty cells.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dlrun_table")
class FillMissing(keras.layers.Layer):
    """(batch, 1) numbers, NaN for an empty cell -> the value with `fill` (the training median)
    in its place, plus a second column that is 1.0 where the cell was empty when `indicator`."""

    def __init__(self, fill: float, indicator: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fill, self.indicator = float(fill), bool(indicator)

    def call(self, x):
        x = ops.cast(x, "float32")
        empty = ops.isnan(x)
        filled = ops.where(empty, ops.full_like(x, self.fill), x)
        return ops.concatenate([filled, ops.cast(empty, "float32")], axis=-1) if self.indicator else filled

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 if self.indicator else 1)

    def get_config(self):
        return {**super().get_config(), "fill": self.fill, "indicator": self.indicator}

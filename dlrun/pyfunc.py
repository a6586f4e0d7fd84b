"""The MLflow pyfunc face of a served model: what `mlflow.pyfunc.load_model` and
`mlflow models serve` run. It reads the served-model folder (dlrun/serving.py) logged as the
artifact 'served' and answers with the same table as `dlrun predict`.

Logged as an MLflow "model from code" (this file is copied into the model, not pickled);
it imports dlrun.serving, so loading the MLflow model needs dlrun installed.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from dlrun import serving


class DlrunServed(mlflow.pyfunc.PythonModel):
    """Raw inputs (a DataFrame of columns, an array of images or windows, strings) -> a DataFrame."""

    def load_context(self, context):
        self.served = serving.load(Path(context.artifacts["served"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        # The hint only tells MLflow not to infer a schema from it: the logged signature (from
        # the training data) validates inputs, and arrays of images or windows pass too.
        return serving.predict_frame(self.served, model_input)


mlflow.models.set_model(DlrunServed())

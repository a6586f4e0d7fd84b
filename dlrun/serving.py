"""Served models: raw inputs in, answers in the user's units out (run contract, `Served`).

One code path turns a user's inputs into model inputs and the model's outputs into a table:
`dlrun predict`, `dlrun eval` and the MLflow pyfunc model (what `mlflow models serve` runs)
all call `predict_frame`, so they cannot disagree. On disk a served model is a folder with
`model.keras` and `serving.json` (the task, names for output columns, and the dlrun modules
that define custom layers, imported before loading).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from dlrun.contract import Examples, Served
from dlrun.errors import DlrunError

MODEL_FILE = "model.keras"
SPEC_FILE = "serving.json"
EXAMPLE_FILE = "example.npz"
EXAMPLE_ARRAY = "__array__"


def chain(preprocess, model):
    """A Keras model: `preprocess` (a functional model on raw inputs) followed by `model`."""
    if preprocess is None:
        return model
    import keras

    return keras.Model(preprocess.input, model(preprocess.output), name=f"served_{model.name}")


# -- inputs and outputs -------------------------------------------------------------------


def to_inputs(model, x):
    """A user's inputs (DataFrame, dict of arrays, array, list of strings) as the arrays `model` takes.

    A model with named inputs (tabular columns) takes a DataFrame or a dict: each input is
    read from the column of its name, strings as strings, numbers as float32; a missing or
    non-numeric column is a one-line error naming it.
    """
    import pandas as pd

    if hasattr(x, "element_spec"):  # a tf.data.Dataset of single examples: already model inputs
        return x
    spec = model.input
    if isinstance(spec, dict):
        if isinstance(x, pd.DataFrame):
            columns = {str(c): x[c] for c in x.columns}
        elif isinstance(x, dict):
            columns = {str(k): v for k, v in x.items()}
        else:
            raise DlrunError(f"the model takes named columns ({', '.join(spec)}), got {type(x).__name__}")
        out = {}
        for name, t in spec.items():
            if name not in columns:
                raise DlrunError(f"input has no column '{name}'", f"the model takes: {', '.join(spec)}")
            out[name] = _as(columns[name], t, name)
        return out
    if isinstance(x, pd.DataFrame):
        x = x.iloc[:, 0].to_numpy() if x.shape[1] == 1 and _is_string(spec) else x.to_numpy()
    return _as(x, spec, getattr(spec, "name", "input"))


def _is_string(t) -> bool:
    return "string" in str(t.dtype)


def _as(values, t, name: str):
    """values reshaped to the input's shape (batch first) with its dtype."""
    shape = tuple(t.shape[1:])
    if _is_string(t):
        arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)],
                         dtype=object)
        return arr.reshape(-1, *shape)
    try:
        arr = np.asarray(values, dtype="float32")
    except (TypeError, ValueError):
        raise DlrunError(f"input '{name}' must be numeric") from None
    if None in shape:  # images of any size, variable-length sequences
        return arr
    try:
        return arr.reshape(-1, *shape)
    except ValueError:
        raise DlrunError(f"input '{name}' has shape {arr.shape[1:]}, the model takes {shape}") from None


def run(model, inputs, batch_size: int = 256):
    """model outputs (numpy; strings decoded) for converted inputs, batched through tf.data."""
    import tensorflow as tf

    if isinstance(inputs, tf.data.Dataset):
        ds = inputs.batch(batch_size)
    else:
        n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        if n == 0:
            raise DlrunError("no examples to predict")
        ds = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    return decoded(model.predict(ds, verbose=0))


def decoded(out):
    """Model outputs (an array or a dict of them, from Keras, a SavedModel, TFLite or ONNX) as
    plain numpy: 16-bit floats (mixed precision) as float32, byte strings as str. The one
    normaliser of outputs: answers frames (outputs_frame) and export checks (export.py) use it."""
    if isinstance(out, dict):
        return {k: decoded(v) for k, v in out.items()}
    v = np.asarray(out)
    if v.dtype.kind == "V" or v.dtype.name in ("bfloat16", "float16"):  # mixed precision outputs
        return v.astype("float32")
    if v.dtype.kind in "OS":
        return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else s, otypes=[object])(v)
    return v


def outputs_frame(out, output_columns: dict | None = None):
    """Model outputs as a DataFrame: 1-D outputs are columns, 2-D outputs one column per entry
    (named from `output_columns`, e.g. probability_<class>), larger ones one array per row."""
    import pandas as pd

    output_columns = output_columns or {}
    if not isinstance(out, dict):
        out = {"prediction": out}
    cols = {}
    for key, v in out.items():
        v = np.asarray(v)
        names = output_columns.get(key)
        if v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 1 and not names):
            cols[key] = v.reshape(len(v))
        elif v.ndim == 2:
            names = list(names or range(v.shape[1]))
            for i in range(v.shape[1]):
                cols[f"{key}_{names[i] if i < len(names) else i}"] = v[:, i]
        else:
            cols[key] = list(v)
    return pd.DataFrame(cols)


def predict_frame(served: Served, examples: Examples | object):
    """One row of answers per example (examples may be an Examples or raw inputs)."""
    inputs = examples.inputs if isinstance(examples, Examples) else examples
    return outputs_frame(run(served.model, to_inputs(served.model, inputs)), served.output_columns)


def class_outputs(out, class_values, binary: bool = False) -> dict:
    """A classifier's output as served answers: `label`, the class as the user's data writes it,
    and `probability`, one column per class (a binary head's one sigmoid becomes two)."""
    import keras

    proba = keras.layers.Concatenate(name="probability")([1.0 - out, out]) if binary else out
    label = keras.layers.StringLookup(vocabulary=[str(v) for v in class_values], invert=True, num_oov_indices=0,
                                      name="label")(keras.ops.argmax(proba, axis=-1))
    return {"label": label, "probability": proba}


def class_answers(served: Served, examples: Examples, what: str = "class") -> tuple[np.ndarray, np.ndarray]:
    """(true class indices, probabilities (n, classes)) of a served classifier on labelled
    examples; a true label the model does not know is one line naming it (`what`: its noun)."""
    classes = [str(c) for c in served.output_columns["probability"]]
    lookup = {c: i for i, c in enumerate(classes)}
    targets = [str(t) for t in np.asarray(examples.targets)]
    unknown = next((t for t in targets if t not in lookup), None)
    if unknown is not None:
        raise DlrunError(f"{what} '{unknown}' is not a class the model knows", f"classes: {', '.join(classes)}")
    answers = predict_frame(served, examples)
    proba = answers[[f"probability_{c}" for c in classes]].to_numpy(dtype="float64")
    return np.array([lookup[t] for t in targets], dtype=int), proba


# -- on disk ------------------------------------------------------------------------------


def _modules(model) -> list[str]:
    """The dlrun modules defining custom layers used by `model` (imported before loading)."""
    seen, stack = set(), [model]
    while stack:
        layer = stack.pop()
        module = type(layer).__module__
        if module.startswith("dlrun."):
            seen.add(module)
        stack.extend(getattr(layer, "layers", []) or [])
    return sorted(seen)


def save(served: Served, folder: Path, task: str) -> Path:
    """Write model.keras + serving.json into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    served.model.save(folder / MODEL_FILE)
    spec = {"task": task, "output_columns": served.output_columns, "meta": served.meta,
            "modules": _modules(served.model)}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    if served.example is not None and not hasattr(served.example, "element_spec"):
        inputs = to_inputs(served.model, served.example)  # what export checks its files with
        arrays = inputs if isinstance(inputs, dict) else {EXAMPLE_ARRAY: inputs}
        np.savez(folder / EXAMPLE_FILE, **{k: np.asarray(v) for k, v in arrays.items()})
    return folder


def example_inputs(folder: Path):
    """The example model inputs saved beside a served model (None if there are none)."""
    path = Path(folder) / EXAMPLE_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=True) as z:  # our own file: string inputs are object arrays
        arrays = {k: z[k] for k in z.files}
    return arrays[EXAMPLE_ARRAY] if list(arrays) == [EXAMPLE_ARRAY] else arrays


def load(folder: Path) -> Served:
    """A served model saved by `save` (custom-layer modules imported first)."""
    import keras

    folder = Path(folder)
    spec_file, model_file = folder / SPEC_FILE, folder / MODEL_FILE
    if not model_file.is_file():
        raise DlrunError(f"no served model in '{folder}' (missing {MODEL_FILE})")
    import zipfile

    if not zipfile.is_zipfile(model_file):
        raise DlrunError(f"'{model_file}' is not a Keras model file (a .keras file is a zip archive)")
    spec = json.loads(spec_file.read_text()) if spec_file.is_file() else {}
    for module in spec.get("modules", []):
        importlib.import_module(module)
    try:
        model = keras.saving.load_model(model_file)
    except (ValueError, OSError, TypeError) as e:
        raise DlrunError(f"cannot load model '{model_file}': {str(e).splitlines()[0][:300]}") from None
    return Served(model, output_columns=spec.get("output_columns") or {}, meta=spec.get("meta") or {})


def example_frame(served: Served):
    """(input example, output example) for MLflow's signature: the served example and its answers."""
    if served.example is None:
        return None, None
    return served.example, predict_frame(served, served.example)

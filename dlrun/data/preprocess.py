"""Fitted preprocessing as Keras models: raw inputs -> what a network trains on.

Built from the training split only, from stock Keras layers (Normalization, StringLookup,
Resizing, Rescaling), so that the served model carries them: it takes the rows, windows or
images a user has. Training may feed the transformed arrays directly for speed; they come from
these same models, so training and serving cannot drift apart.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def dict_inputs():
    """Building a model on table inputs keyed by column name: a name Keras cannot take for a
    layer ("/" in it) stays the key with a cleaned-up layer name, which Keras warns about.
    The key is what counts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict, all keys in the dict must match")
        yield


def table(frame, features: list[str], standardize: bool = True):
    """(model, feature names) for a table: one named input per column.

    Numeric columns -> float32, standardised with the training mean and variance; text
    columns -> one-hot over the training categories (an unseen category is all zeros).
    The output is one float32 matrix with the columns in `features` order.

    Empty cells (NaN numbers, empty or NaN strings) of a column whose training rows had some
    are answered inside the model: a number by the training median plus a 0/1 `<col> missing`
    column (the network can learn what emptiness says); a string by a `<col>=<missing>`
    category, the lookup's out-of-vocabulary slot.
    """
    import keras
    import pandas as pd

    from dlrun.data._table_layers import FillMissing

    inputs, parts, names = {}, [], []
    for col in features:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values):
            x = inputs[col] = keras.Input(shape=(1,), name=_layer_name(col), dtype="float32")
            v = values.to_numpy(dtype="float64")
            empty = np.isnan(v)
            v = v[~empty] if (~empty).any() else np.zeros(1)
            value = x
            if empty.any():  # complete columns keep the plain path (and export to every format as before)
                x = FillMissing(float(np.median(v)), indicator=True, name=f"fill_{_key(col)}")(x)
                value = x[:, :1]
            if standardize:
                var = float(v.var()) if v.var() > 0 else 1.0  # a constant column stays finite (as in scikit-learn)
                value = keras.layers.Normalization(mean=[v.mean()], variance=[var], name=f"scale_{_key(col)}")(value)
            parts.append(value)
            names.append(col)
            if empty.any():
                parts.append(x[:, 1:])
                names.append(f"{col} missing")
        else:
            text = [_cell_text(v) for v in values]
            vocab = sorted(set(text) - {""})
            x = inputs[col] = keras.Input(shape=(1,), name=_layer_name(col), dtype="string")
            onehot = keras.layers.StringLookup(vocabulary=vocab or [MISSING], num_oov_indices=1, output_mode="one_hot",
                                               name=f"onehot_{_key(col)}")(x)
            if "" in text:  # the out-of-vocabulary slot is the empty (or unseen) category
                parts.append(onehot)
                names += [f"{col}={MISSING}", *(f"{col}={v}" for v in vocab)]
            else:
                parts.append(onehot[:, 1:])  # drop the out-of-vocabulary slot: unseen -> all zeros
                names += [f"{col}={v}" for v in vocab]
    out = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    with dict_inputs():
        return keras.Model(inputs, out, name="preprocess"), names


MISSING = "<missing>"  # the category of an empty string cell


def _cell_text(v) -> str:
    """A string cell as the lookup sees it; an empty cell (NaN, None) is ''."""
    import pandas as pd

    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _layer_name(name: str) -> str:
    return str(name).replace("/", "_") or "column"


def _key(name: str) -> str:
    import re

    return re.sub(r"[^0-9A-Za-z_]", "_", str(name)) or "col"


def columns_of(frame, features: list[str]) -> dict:
    """A DataFrame's feature columns as the (n, 1) arrays a `table` model takes."""
    import pandas as pd

    out = {}
    for col in features:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values):
            out[col] = values.to_numpy(dtype="float32").reshape(-1, 1)
        else:
            out[col] = np.asarray([_cell_text(v) for v in values], dtype=object).reshape(-1, 1)
    return out


def transform(model, inputs, batch_size: int = 4096) -> np.ndarray:
    """Apply a preprocessing model to raw inputs (numpy out); empty inputs give an empty matrix."""
    import tensorflow as tf

    n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    if n == 0:
        return np.zeros((0, *model.output.shape[1:]), "float32")
    ds = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    return np.concatenate([np.asarray(model(b, training=False)) for b in ds]).astype("float32")


def affine(shape: tuple, a, b, name: str = "preprocess"):
    """x -> x * a + b per feature (last axis), as a Normalization layer model (mean -b/a,
    variance 1/a^2): how series windows are scaled."""
    import keras

    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    inputs = keras.Input(shape=shape, name="window")
    out = keras.layers.Normalization(axis=-1, mean=-b / a, variance=1.0 / a**2, name="scale")(inputs)
    return keras.Model(inputs, out, name=name)


def images(channels: int, scale: float, size: tuple | None):
    """Images of any size (raw pixel values) -> the training size, times `scale` (to [0, 1])."""
    import keras

    inputs = keras.Input(shape=(None, None, channels), name="image")
    x = inputs
    if size:
        x = keras.layers.Resizing(int(size[0]), int(size[1]), name="resize")(x)
    x = keras.layers.Rescaling(float(scale), name="rescale")(x)
    return keras.Model(inputs, x, name="preprocess")

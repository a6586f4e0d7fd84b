"""`dlrun export run_id=<id> format=keras|savedmodel|tflite|onnx|tfjs [output=DIR] [quantize=dynamic]`

Writes a run's served model (raw inputs in, the run contract's model) in a serving format and
checks it: the exported file is loaded with its own runtime and run on the run's example inputs,
and the largest absolute difference from the Keras model is printed (and logged to the run as
export/<format>/max_abs_diff). TFLite keeps the numeric outputs (class probabilities, values)
and writes the class names to labels.txt beside the model, the usual TFLite layout: string
outputs need TensorFlow ops that the TFLite runtime does not ship.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dlrun.contract import Served
from dlrun.errors import DlrunError, did_you_mean

FORMATS = ("keras", "savedmodel", "tflite", "onnx", "tfjs")


def export(served: Served, served_dir: Path, fmt: str, output: Path, quantize: str | None = None) -> dict:
    """Write `served` as `fmt` under `output`; returns {"path", "max_abs_diff", "outputs"}."""
    if fmt not in FORMATS:
        raise DlrunError(f"unknown export format '{fmt}'", did_you_mean(fmt, FORMATS))
    if quantize not in (None, "", "none", "dynamic"):
        raise DlrunError(f"quantize: unknown value '{quantize}'", "none | dynamic (TFLite int8 weights)")
    from dlrun.serving import example_inputs

    inputs = example_inputs(served_dir)
    if inputs is None:
        raise DlrunError(f"'{served_dir}' keeps no example inputs to check the export with",
                         "re-run training with this dlrun version")
    output.mkdir(parents=True, exist_ok=True)
    return EXPORTERS[fmt](served, served_dir, inputs, output, quantize)


def _numeric(values) -> dict:
    """Model outputs as {name: float64 array}, string outputs (labels, translations) as flat str
    arrays, after the one decoding of outputs (serving.decoded)."""
    from dlrun.serving import decoded

    values = decoded(values if isinstance(values, dict) else {"output": values})
    out = {}
    for k, v in values.items():
        if v.dtype.kind in "fiu":
            out[k] = v.astype("float64")
        elif v.dtype.kind in "OU":
            out[k] = np.asarray([str(x) for x in v.reshape(-1)])
    return out


def _diff(reference: dict, got: dict) -> float:
    """Largest absolute difference of the numeric outputs; a string output counts 0 when every
    answer is the same and 1 when any differs (a translator has only string outputs)."""
    common = [k for k in reference if k in got]
    if not common:
        raise DlrunError("the exported model has none of the served model's outputs")
    diffs = []
    for k in common:
        if reference[k].dtype.kind == "f":
            g = np.asarray(got[k], dtype="float64").reshape(reference[k].shape)
            diffs.append(np.max(np.abs(reference[k] - g)))
        else:
            diffs.append(0.0 if np.array_equal(reference[k], _numeric({k: got[k]}).get(k)) else 1.0)
    return float(max(diffs))


def _reference(served: Served, inputs) -> dict:
    return _numeric(served.model.predict(inputs, verbose=0))


def _keras(served, served_dir, inputs, output, quantize):
    import keras

    for name in ("model.keras", "serving.json"):
        if (served_dir / name).is_file():
            shutil.copy2(served_dir / name, output / name)
    again = keras.saving.load_model(output / "model.keras")
    diff = _diff(_reference(served, inputs), _numeric(again.predict(inputs, verbose=0)))
    return {"path": str(output / "model.keras"), "max_abs_diff": diff}


def _savedmodel(served, served_dir, inputs, output, quantize, model=None):
    import tensorflow as tf

    model = model or served.model
    path = output / "saved_model"
    if path.exists():
        shutil.rmtree(path)
    model.export(str(path), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(path))
    got = loaded.serve(_tensors(inputs))
    diff = _diff(_numeric(model.predict(inputs, verbose=0)), _numeric({k: v.numpy() for k, v in got.items()}
                                                                       if isinstance(got, dict) else got.numpy()))
    return {"path": str(path), "max_abs_diff": diff}


def _tensors(inputs):
    import tensorflow as tf

    if isinstance(inputs, dict):
        return {k: tf.constant(v) for k, v in inputs.items()}
    return tf.constant(inputs)


def _tflite(served, served_dir, inputs, output, quantize):
    import keras
    import tensorflow as tf

    model = served.model
    if any("string" in str(t.dtype) for t in keras.tree.flatten(model.inputs)):
        raise DlrunError("tflite: this model takes text (string ops are not TFLite builtins)",
                         "export format=savedmodel for TF Serving instead")
    outputs = model.output
    if isinstance(outputs, dict):  # keep what predicts as numbers (symbolic dtypes of lookups can lie)
        keep = {k for k, v in _reference(served, inputs).items() if v.dtype.kind == "f"}
        numeric = {k: v for k, v in outputs.items() if k in keep}
    else:
        numeric = outputs
    plain = keras.Model(model.inputs if not isinstance(model.input, dict) else model.input, numeric)
    staged = _savedmodel(served, served_dir, inputs, output / "staging", None, model=plain)
    converter = tf.lite.TFLiteConverter.from_saved_model(staged["path"])
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    try:
        flat = converter.convert()
    except Exception as e:  # the converter's errors are long MLIR dumps: keep the first line
        raise DlrunError(f"tflite conversion failed: {str(e).strip().splitlines()[0][:200]}") from None
    shutil.rmtree(output / "staging", ignore_errors=True)
    name = "model_int8.tflite" if quantize == "dynamic" else "model.tflite"
    (output / name).write_bytes(flat)
    labels = served.output_columns.get("probability")
    if labels:
        (output / "labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    got = _run_tflite(flat, inputs)
    return {"path": str(output / name), "max_abs_diff": _diff(_numeric(plain.predict(inputs, verbose=0)), got),
            "bytes": len(flat)}


def _run_tflite(flat: bytes, inputs) -> dict:
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter  # the TFLite runtime's new home
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=flat)
    runner = interpreter.get_signature_runner()
    feed = inputs if isinstance(inputs, dict) else {interpreter.get_signature_list()["serving_default"]["inputs"][0]: inputs}
    return _numeric(runner(**{k: np.asarray(v, dtype="float32") for k, v in feed.items()}))


def _optional(package: str, fmt: str):
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise DlrunError(f"format={fmt} needs the '{package}' package", f"pip install {package}")


def _onnx(served, served_dir, inputs, output, quantize):
    _optional("tf2onnx", "onnx")
    import tf2onnx

    path = output / "model.onnx"
    tf2onnx.convert.from_keras(served.model, output_path=str(path))
    result = {"path": str(path), "max_abs_diff": None}
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path))
        names = [o.name for o in session.get_outputs()]
        feed = inputs if isinstance(inputs, dict) else {session.get_inputs()[0].name: inputs}
        got = dict(zip(names, session.run(None, {k: np.asarray(v) for k, v in feed.items()}), strict=True))
        result["max_abs_diff"] = _diff(_reference(served, inputs), _numeric(got))
    except ImportError:
        pass
    return result


def _tfjs(served, served_dir, inputs, output, quantize):
    _optional("tensorflowjs", "tfjs")
    import tensorflowjs as tfjs

    tfjs.converters.save_keras_model(served.model, str(output / "tfjs"))
    return {"path": str(output / "tfjs"), "max_abs_diff": None}


EXPORTERS = {"keras": _keras, "savedmodel": _savedmodel, "tflite": _tflite, "onnx": _onnx, "tfjs": _tfjs}


def describe(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if v is not None})

"""`dlrun export` round trips (keras, savedmodel, tflite float and int8) and the logged model
served for real by `mlflow models serve` (e2e), answering raw rows like `dlrun predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import stderr_line
from test_server import _free_port


@pytest.fixture(scope="module")
def trained(shared_run):
    """The session's shared insurance run: (workdir, run id, in-process dlrun in its folder)."""
    shared = shared_run("tabular")
    return shared.workdir, shared.run.info.run_id, shared.run_dlrun


def test_export_round_trips(trained):
    workdir, run_id, run_dlrun = trained

    def export(*args, expect=0):
        return run_dlrun("export", f"run_id={run_id}", *args, expect=expect)

    for fmt in ("keras", "savedmodel", "tflite"):
        export(f"format={fmt}")
    export("format=tflite", "quantize=dynamic", "output=export/int8")
    out = workdir / "export"
    assert (out / "keras" / "model.keras").is_file() and (out / "savedmodel" / "saved_model" / "saved_model.pb").is_file()
    assert (out / "tflite" / "labels.txt").read_text().split() == ["0", "1", "2"]
    small, full = (out / "int8" / "model_int8.tflite").stat().st_size, (out / "tflite" / "model.tflite").stat().st_size
    assert small < 0.7 * full  # int8 weights
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(f"sqlite:///{workdir}/mlflow.db").get_run(run_id).data.metrics
    assert metrics["export/keras/max_abs_diff"] == 0
    assert metrics["export/savedmodel/max_abs_diff"] < 1e-5 and metrics["export/tflite/max_abs_diff"] < 1e-3

    # the exported SavedModel answers raw feature values by itself (TF Serving's view)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(out / "savedmodel" / "saved_model"))
    answer = loaded.serve({"speed": tf.constant([[190.0]]), "age": tf.constant([[19.0]]), "miles": tf.constant([[40.0]])})
    assert answer["label"].numpy()[0].decode() in {"0", "1", "2"}
    assert abs(float(tf.reduce_sum(answer["probability"])) - 1.0) < 1e-5

    if not _has("tf2onnx"):
        assert "format=onnx needs the 'tf2onnx' package" in stderr_line(export("format=onnx", expect=2))
    assert "unknown export format 'pmml'" in stderr_line(export("format=pmml", expect=2))


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


@pytest.mark.e2e
def test_mlflow_models_serve_answers_raw_rows_like_dlrun_predict(trained):
    from conftest import DLRUN, dlrun_env

    workdir, run_id, _ = trained
    rows = pd.DataFrame({"speed": [190, 95, 120], "age": [19, 45, 30], "miles": [40.0, 5.0, 12.0]})
    rows.to_csv(workdir / "rows.csv", index=False)
    subprocess.run([DLRUN, "predict", f"run_id={run_id}", "input=rows.csv", "output=answers.csv"], cwd=workdir,
                   env=dlrun_env(), check=True, capture_output=True, timeout=300)
    expected = pd.read_csv(workdir / "answers.csv")

    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    port = _free_port()
    env = {**dlrun_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    proc = subprocess.Popen([exe, "models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 150
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not come up in 150 s")
        body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            served = pd.DataFrame(json.loads(r.read())["predictions"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert list(served["label"].astype(str)) == list(expected["predicted_group"].astype(str))
    assert np.allclose(served["probability_0"], expected["probability_0"], atol=1e-6)

"""Tracking against a real `mlflow server` process on 127.0.0.1 (tracking.uri)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--artifacts-destination", str(store / "artifacts")],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up in 90 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_train_and_eval_against_a_server(run_dlrun, mlflow_server, workdir):
    from mlflow.tracking import MlflowClient

    run_dlrun("train", "trainer=smoke", f"tracking.uri={mlflow_server}", "tracking.experiment=server-check")
    assert not (workdir / "mlflow.db").exists()  # nothing went to the local default store
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("server-check")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics
    assert any(a.path == "config.yaml" for a in client.list_artifacts(run.info.run_id))

    run_dlrun("eval", f"run_id={run.info.run_id}", f"tracking.uri={mlflow_server}")
    assert len(client.get_metric_history(run.info.run_id, "test/accuracy")) == 2

"""End to end: the real `dlrun` console script against a real MLflow store."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import DLRUN, dlrun_env, stderr_line

SMALL = ["trainer.epochs=3", "trainer.limit_batches=5"]


def _metric_history(client, run_id, key):
    return client.get_metric_history(run_id, key)


def test_train_logs_everything_then_eval_reproduces(run_dlrun, runs, mlflow_client, workdir):
    out = run_dlrun("train", *SMALL).stdout
    assert "comparison" in out and "random_forest" in out and "mlp (network)" in out
    assert (workdir / "mlflow.db").exists()  # MLflow's default local store, in the working directory
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("tabular-mlp-")
    exp = mlflow_client.get_experiment(run.info.experiment_id)
    assert exp.name == "tabular"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["model.hidden_units"] == "[64, 64]" and p["trainer.epochs"] == "3" and p["data.name"] == "insurance"
    assert p["strategy.replicas"] == "1" and p["trainer.global_batch_size"] == "32"
    for key in ("dlrun.version", "tensorflow.version", "keras.version", "dlrun.devices", "dlrun.strategy",
                "dlrun.overrides", "dlrun.command"):
        assert t.get(key), key
    assert "trainer.epochs=3" in t["dlrun.overrides"]
    assert t["dlrun.command"].startswith("dlrun train ") and "trainer.epochs=3" in t["dlrun.command"]
    for key in ("train/loss", "val/loss", "train/accuracy", "val/accuracy"):
        steps = [h.step for h in _metric_history(mlflow_client, run.info.run_id, key)]
        assert steps == [1, 2, 3], key
    for key in ("test/accuracy", "test/f1_macro", "baseline/linear/accuracy", "baseline/random_forest/accuracy",
                "timing/samples_per_second"):
        assert key in m, key
    assert 0.0 <= m["test/accuracy"] <= 1.0
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "native", "plots", "tables", "checkpoints"} <= artifacts  # MLflow model: below
    plots = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png"} <= plots
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.digest and data_input.dataset.name == "insurance"
    assert data_input.dataset.source_type == "generator" and "seed=42" in data_input.dataset.source

    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pred = np.asarray(model.predict(np.zeros((2, 3), dtype="float32")))
    assert pred.shape == (2, 3) and np.allclose(pred.sum(axis=1), 1, atol=1e-4)

    out = run_dlrun("eval", f"run_id={run.info.run_id}").stdout
    assert "test/accuracy" in out
    again = mlflow_client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED"
    history = _metric_history(mlflow_client, run.info.run_id, "test/accuracy")
    assert len(history) == 2 and history[0].value == pytest.approx(history[1].value, abs=1e-9)

    # eval failing on bad data must not damage the finished run
    proc = run_dlrun("eval", f"run_id={run.info.run_id}", "data=csv", "data.path=missing.csv", "data.target=y",
                     expect=2)
    assert "missing.csv" in stderr_line(proc)
    assert mlflow_client.get_run(run.info.run_id).info.status == "FINISHED"


def test_eval_checkpoint_without_mlflow(run_dlrun, workdir):
    run_dlrun("train", *SMALL, "tracking=off", "hydra.run.dir=out")
    assert not (workdir / "mlflow.db").exists()
    ckpt = workdir / "out" / "best.keras"
    assert ckpt.exists()
    out = run_dlrun("eval", f"checkpoint={ckpt}", "task=tabular", "tracking=off").stdout
    assert "test/accuracy" in out
    proc = run_dlrun("eval", "checkpoint=nope.keras", "tracking=off", expect=2)
    assert "nope.keras" in stderr_line(proc)


def test_mirrored_two_cpu_replicas_and_custom_loop(run_dlrun, runs):
    run_dlrun("train", *SMALL, "strategy=mirrored", "strategy.cpu_replicas=2", "trainer.loop=custom")
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.replicas"] == "2"
    assert run.data.params["trainer.global_batch_size"] == "64"
    assert run.data.tags["dlrun.strategy"] == "MirroredStrategy"
    assert "test/accuracy" in run.data.metrics and "val/loss" in run.data.metrics


def test_run_that_fails_is_marked_failed_with_reason(run_dlrun, runs, workdir):
    proc = run_dlrun("train", "strategy=gpu", expect=2)
    assert "no GPU" in stderr_line(proc)
    assert runs() == []  # the device is checked before a run is opened

    proc = run_dlrun("train", "data=csv", f"data.path={workdir}/none.csv", "data.target=y", expect=2)
    assert "none.csv" in stderr_line(proc)
    assert runs()[0].info.status == "FAILED" and "does not exist" in runs()[0].data.tags["dlrun.error"]


def test_unreachable_tracking_server_is_one_line_not_a_hang(run_dlrun):
    start = time.time()
    proc = run_dlrun("train", "trainer=smoke", "tracking.uri=http://127.0.0.1:9", expect=2, timeout=120)
    assert "cannot reach the MLflow server at http://127.0.0.1:9" in stderr_line(proc)
    assert time.time() - start < 60
    proc = run_dlrun("eval", "run_id=abc", "tracking.uri=http://127.0.0.1:9", expect=2, timeout=120)
    assert "cannot reach the MLflow server" in stderr_line(proc)


def test_model_that_does_not_fit_the_task(run_dlrun, runs):
    proc = run_dlrun("train", "model=lstm", expect=2)
    assert "does not fit task 'tabular'" in stderr_line(proc)
    assert runs()[0].info.status == "FAILED"


def test_multirun_sweep_and_cfg_passthrough(run_dlrun, runs, workdir):
    out = run_dlrun("train", "--cfg", "job").stdout
    assert "trainer:" in out and "hydra" not in out.split("trainer:")[0][-200:]
    run_dlrun("train", "-m", "model.hidden_units=[8],[16]", *SMALL)
    assert len(runs()) == 2 and all(r.info.status == "FINISHED" for r in runs())
    assert {r.data.params["model.hidden_units"] for r in runs()} == {"[8]", "[16]"}
    assert (workdir / "multirun").is_dir() and not (workdir / "dlrun").exists()


def test_ctrl_c_marks_the_run_killed(workdir, runs):
    proc = subprocess.Popen([DLRUN, "train", "trainer.epochs=100000", "trainer.checkpoint.enabled=false"],
                            cwd=workdir, env=dlrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("epoch "):
                break
        else:
            pytest.fail("training never started")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert runs()[0].info.status == "KILLED", proc.stderr.read()[-3000:]
    assert proc.returncode == 130


def test_trainer_options_mixed_precision_cosine_adamw_early_stopping(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "trainer.epochs=4", "trainer.limit_batches=4", "trainer.precision=mixed_bfloat16",
              "trainer.optimizer=adamw", "trainer.lr_schedule.name=cosine", "trainer.early_stopping.enabled=true",
              "trainer.early_stopping.patience=1", "trainer.deterministic=true", "data=breast_cancer",
              "tracking.tensorboard=true")
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.precision"] == "mixed_bfloat16"
    assert "test/roc_auc" in run.data.metrics  # two classes: sigmoid head, ROC AUC in the report
    assert 1 <= len(mlflow_client.get_metric_history(run.info.run_id, "val/loss")) <= 4
    events = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "tensorboard/train")]
    assert any("tfevents" in p for p in events), events


@pytest.mark.slow
def test_insurance_preset_reaches_the_course_range(run_dlrun, runs):
    """Course: best known model ~0.80 test accuracy; the generator's Bayes rate is ~0.80."""
    run_dlrun("train", "experiment=insurance", "trainer.progress=false")
    (run,) = runs()
    m = run.data.metrics
    assert run.data.params["model.params"] == "353"
    assert 0.74 <= m["test/accuracy"] <= 0.86
    best_baseline = max(m["baseline/linear/accuracy"], m["baseline/random_forest/accuracy"])
    assert m["test/accuracy"] >= best_baseline - 0.05

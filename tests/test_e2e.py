"""End to end through the CLI (in process; the signal tests run the real console script) against
a real MLflow store."""

from __future__ import annotations

import signal
import subprocess
import time
import types

import pytest
from conftest import DLRUN, dlrun_env, stderr_line

SMALL = ["trainer.epochs=3", "trainer.limit_batches=5"]


def _metric_history(client, run_id, key):
    return client.get_metric_history(run_id, key)


def test_train_logs_everything_then_eval_reproduces(shared_run):
    shared = shared_run("tabular")
    out, workdir, mlflow_client, run_dlrun = shared.proc.stdout, shared.workdir, shared.client, shared.run_dlrun
    assert "comparison" in out and "random_forest" in out and "mlp (network)" in out
    assert (workdir / "mlflow.db").exists()  # MLflow's default local store, in the working directory
    run = mlflow_client.get_run(shared.run.info.run_id)
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
    assert "system/cpu_utilization_percentage" in m and "system/system_memory_usage_megabytes" in m
    # three epochs on 960 rows: well above the 0.40 of always answering the largest group
    assert m["test/accuracy"] > 0.65, m["test/accuracy"]
    assert t["dlrun.evaluated_weights"].startswith("best (val_accuracy")
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "served", "plots", "tables", "checkpoints"} <= artifacts  # MLflow model: below
    plots = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png"} <= plots
    contexts = {}
    for data_input in run.inputs.dataset_inputs:
        assert data_input.dataset.digest and data_input.dataset.name == "insurance"
        assert data_input.dataset.source_type == "generator" and "seed=42" in data_input.dataset.source
        contexts[[tag.value for tag in data_input.tags if tag.key == "mlflow.data.context"][0]] = data_input
    assert set(contexts) == {"training", "validation", "testing"}

    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    rows = pd.DataFrame({"speed": [190, 95], "age": [19, 45], "miles": [40.0, 5.0]})  # raw units, as a user has them
    pred = model.predict(rows)
    assert list(pred["label"]) == ["0", "1"]  # a young fast driver: many accidents; a calm one: few or none
    assert pred[["probability_0", "probability_1", "probability_2"]].sum(axis=1).round(4).eq(1).all()
    # the logged model's page lists the test dataset its metrics were computed on
    (logged,) = mlflow_client.search_logged_models([run.info.experiment_id])
    linked = {mm.key: mm.dataset_name for mm in logged.metrics if mm.key.startswith("test/")}
    assert linked["test/accuracy"] == "insurance"
    assert [c.name for c in model.metadata.signature.inputs.inputs] == ["speed", "age", "miles"]

    out = run_dlrun("eval", f"run_id={run.info.run_id}").stdout
    assert "test/accuracy" in out
    again = mlflow_client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED"
    history = _metric_history(mlflow_client, run.info.run_id, "test/accuracy")
    assert len(history) >= 2 and history[0].value == pytest.approx(history[-1].value, abs=1e-9)

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


def test_a_sweep_of_different_models_under_one_mirrored_strategy(run_dlrun, runs):
    # the jobs of a sweep share a process: each job's gradient all-reduce has its own shapes
    run_dlrun("train", "-m", *SMALL, "strategy=mirrored", "strategy.cpu_replicas=2",
              "model.hidden_units=[8],[64,64]")
    done = [r for r in runs() if "mlflow.parentRunId" in r.data.tags]
    assert len(done) == 2 and all(r.info.status == "FINISHED" for r in done)
    assert {r.data.params["model.hidden_units"] for r in done} == {"[8]", "[64, 64]"}


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


def test_multirun_sweep_is_one_parent_run_with_a_summary(run_dlrun, runs, mlflow_client, workdir):
    out = run_dlrun("train", "--cfg", "job").stdout
    assert "trainer:" in out and "hydra" not in out.split("trainer:")[0][-200:]
    # a bad value in the grid fails its job (one line, a FAILED child run); the sweep goes on
    proc = run_dlrun("train", "-m", "model.hidden_units=[8],abc,[16]", *SMALL, expect=2)
    assert "Traceback" not in proc.stderr
    (parent,) = [r for r in runs() if r.data.tags.get("dlrun.sweep") == "true"]
    jobs = [r for r in runs() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.status for r in jobs) == ["FAILED", "FINISHED", "FINISHED"]
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    assert {r.data.params["model.hidden_units"] for r in finished} == {"[8]", "[16]"}
    assert parent.info.status == "FINISHED"
    m = parent.data.metrics
    assert (m["sweep/jobs"], m["sweep/finished"], m["sweep/failed"]) == (3, 2, 1)
    best = max(finished, key=lambda r: r.data.metrics["objective/val"])  # val_accuracy: higher is better
    assert parent.data.tags["dlrun.best_run_id"] == best.info.run_id
    assert m["sweep/best_value"] == best.data.metrics["objective/val"]
    assert "tables/sweep.json" in {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "tables")}
    assert (workdir / "multirun").is_dir() and not (workdir / "dlrun").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(("sig", "code", "reason"), [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_end_the_run_killed_with_the_best_checkpoint(workdir, runs, mlflow_client, sig, code,
                                                                        reason):
    """SIGTERM is what docker stop, SLURM and Kubernetes send: the same as Ctrl-C."""
    proc = subprocess.Popen([DLRUN, "train", "trainer.epochs=100000"],
                            cwd=workdir, env=dlrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("epoch "):
                break
        else:
            pytest.fail("training never started")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    run = runs()[0]
    err = proc.stderr.read()
    assert run.info.status == "KILLED", err[-3000:]
    assert proc.returncode == code
    assert run.data.tags["dlrun.error"] == reason
    assert stderr_line(types.SimpleNamespace(stderr=err)) == f"error: {reason}"
    logged = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "checkpoints")]
    assert logged == ["checkpoints/best.keras"]


def test_trainer_options_mixed_precision_cosine_adamw_early_stopping(run_dlrun, runs, mlflow_client):
    # min_delta larger than any possible change: no epoch improves, so training must stop after
    # the first epoch + patience (2 of 6), and the run says so
    run_dlrun("train", "trainer.epochs=6", "trainer.limit_batches=4", "trainer.precision=mixed_bfloat16",
              "trainer.optimizer=adamw", "trainer.lr_schedule.name=cosine", "trainer.early_stopping.enabled=true",
              "trainer.early_stopping.patience=1", "trainer.early_stopping.min_delta=100",
              "trainer.deterministic=true", "data=breast_cancer", "tracking.tensorboard=true")
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.precision"] == "mixed_bfloat16"
    assert run.data.params["trainer.optimizer"] == "adamw"
    assert "test/roc_auc" in run.data.metrics  # two classes: sigmoid head, ROC AUC in the report
    assert len(mlflow_client.get_metric_history(run.info.run_id, "val/loss")) == 2
    assert run.data.metrics["timing/epochs"] == 2
    events = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "tensorboard/train")]
    assert any("tfevents" in p for p in events), events

"""hparams_search=optuna: dlrun's Optuna sweeper (hydra_plugins/dlrun_optuna, dlrun/optuna_sweep.py)
on the embedded tabular data -- the study in SQLite, resume with the same command, failed and
pruned trials, one MLflow parent run for the study."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import pytest
from conftest import DLRUN, dlrun_env

FAST = ["trainer=smoke", "tracking.log_model=false", "tracking.log_plots=false", "tracking.system_metrics=false",
        "tracking.log_dataset=false"]


def study(workdir, name="tabular-mlp"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/multirun/optuna/{name}/optuna.db")


def states(s) -> list[str]:
    return [t.state.name for t in s.get_trials(deepcopy=False)]


def children(mlflow_client, parent):
    exp = mlflow_client.get_run(parent).info.experiment_id
    return mlflow_client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def test_study_runs_records_failures_and_continues(run_dlrun, workdir, mlflow_client):
    # trial 0 is enqueued with a value dlrun rejects: it fails, the study goes on
    args = ["train", "-m", "hparams_search=optuna", *FAST, 'hydra.sweeper.enqueue=["model.dropout=1.5"]']
    run_dlrun(*args, "hydra.sweeper.n_trials=3", expect=2)  # exit 2: a trial failed (as in grid sweeps)
    folder = workdir / "multirun" / "optuna" / "tabular-mlp"
    s = study(workdir)
    assert states(s) == ["FAIL", "COMPLETE", "COMPLETE"]
    first = s.trials[0]
    assert "dropout" in first.user_attrs["error"] and first.params["model.dropout"] == 1.5
    assert s.direction.name == "MAXIMIZE"  # direction: auto -> the tabular objective val_accuracy
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2"]  # job number = trial number
    finished = {t.number: t.datetime_complete for t in s.trials}
    parent = (folder / "mlflow_parent_run_id").read_text().strip()
    kids = children(mlflow_client, parent)
    assert len(kids) == 3
    values = {r.info.run_id: r.data.metrics.get("objective/val") for r in kids if r.info.status == "FINISHED"}
    for t in s.trials[1:]:  # the study's value is the run's objective on validation data
        assert values[t.user_attrs["mlflow_run_id"]] == pytest.approx(t.value)
        assert mlflow_client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["dlrun.optuna.trial"] == str(t.number)

    # the same command again: the study is complete, nothing runs, nothing is redone
    again = run_dlrun(*args, "hydra.sweeper.n_trials=3", expect=0)
    assert "3 of 3 trials done" in " ".join(again.stdout.split())
    assert len(study(workdir).trials) == 3
    # more trials: numbering and folders continue, finished trials are untouched, same parent run
    run_dlrun(*args, "hydra.sweeper.n_trials=4", expect=0)
    s = study(workdir)
    assert states(s) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert {t.number: t.datetime_complete for t in s.trials[:3]} == finished
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert (folder / "mlflow_parent_run_id").read_text().strip() == parent
    assert len(children(mlflow_client, parent)) == 4
    summary = mlflow_client.get_run(parent)
    assert summary.info.status == "FINISHED" and summary.data.metrics["sweep/failed"] == 1
    assert summary.data.metrics["sweep/finished"] == 3


@pytest.mark.e2e
def test_interrupted_study_resumes_with_the_same_command(run_process, workdir):
    args = ["train", "-m", "hparams_search=optuna", *FAST, "hydra.sweeper.n_trials=3", "trainer.epochs=2"]
    proc = subprocess.Popen([DLRUN, *args], cwd=workdir, env=dlrun_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:  # kill it (SIGKILL: no clean-up at all) while trial 1 runs, after trial 0 finished
        while time.time() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):  # the file may exist before the study does
                running = states(study(workdir)) == ["COMPLETE", "RUNNING"]
                if running and (workdir / "multirun" / "optuna" / "tabular-mlp" / "1").is_dir():
                    break
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    kept = (workdir / "multirun" / "optuna" / "tabular-mlp" / "0" / ".hydra" / "overrides.yaml").stat().st_mtime_ns

    run_process(*args, expect=0)
    import optuna

    s = study(workdir)
    assert states(s) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    interrupted, retry = s.trials[1], s.trials[2]
    assert "interrupted" in interrupted.user_attrs and "error" not in interrupted.user_attrs
    assert retry.params == interrupted.params  # tried again first (Optuna's RetryHeartbeatStaleTrialCallback)
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 1
    folder = workdir / "multirun" / "optuna" / "tabular-mlp"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert (folder / "0" / ".hydra" / "overrides.yaml").stat().st_mtime_ns == kept  # nothing overwritten


@pytest.mark.e2e
def test_parallel_workers_share_the_study_and_prune(run_process, workdir, mlflow_client):
    # two processes, one trial each at a time; a pruner that prunes every trial after its first epoch
    run_process("train", "-m", "hparams_search=optuna", *FAST, "trainer.epochs=3", "hydra.sweeper.n_trials=4",
              "hydra.sweeper.n_jobs=2", "hydra.sweeper.study_name=par",
              "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.01}", expect=0)
    s = study(workdir, "par")
    assert states(s) == ["PRUNED"] * 4  # exactly n_trials: the workers never overshoot
    assert len({t.user_attrs["pid"] for t in s.trials}) == 2
    for t in s.trials:
        assert list(t.intermediate_values) == [1]
        run = mlflow_client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["dlrun.optuna.pruned"] == "epoch 1"
        assert len(mlflow_client.get_metric_history(run.info.run_id, "val/accuracy")) == 1
    folder = workdir / "multirun" / "optuna" / "par"
    parent = (folder / "mlflow_parent_run_id").read_text().strip()
    assert len(children(mlflow_client, parent)) == 4
    assert (folder / "worker-1.log").is_file()


def _open_at(url, start, results):
    import warnings

    from dlrun.optuna_study import open_storage

    warnings.simplefilter("ignore")
    while time.time() < start:
        pass
    try:
        open_storage(url, 60)
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.e2e
def test_processes_opening_a_new_study_storage_at_once_all_get_it(tmp_path):
    """Two processes creating one new SQLite storage at the same moment race to create its tables
    (the sweep and anything reading the study, or workers on a shared store); both must open it."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    outcomes = []
    for i in range(6):
        url, results, start = f"sqlite:///{tmp_path / f'study{i}.db'}", ctx.Queue(), time.time() + 4.0
        procs = [ctx.Process(target=_open_at, args=(url, start, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes += [results.get(timeout=10) for _ in procs]
    assert outcomes == ["ok"] * 12, outcomes

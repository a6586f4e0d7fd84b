"""dlrun on GPU servers and clusters (issue 12): parallel sweep jobs sharing one SQLite store,
two multi-worker processes on 127.0.0.1, and the GPU pool that gives each parallel sweep job
its own GPUs."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess

import pytest
from conftest import DLRUN, dlrun_env

# small and fast: a few hundred rows, two batches an epoch, no baselines, no figures
FAST = ("experiment=insurance", "data.n_samples=300", "task.baselines=[]", "tracking.log_plots=false",
        "tracking.system_metrics=false", "tracking.log_dataset=false")


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="hydra-joblib-launcher not installed (dev extra)")
def test_four_parallel_jobs_on_one_sqlite_store_lose_no_run_and_no_metric(run_process, runs, mlflow_client):
    epochs = 3
    # backup_interval_s=0: every job sends its metrics after every epoch, so the four processes
    # write to the store at the same moments
    run_process("train", "-m", *FAST, f"trainer.epochs={epochs}", "trainer.backup_interval_s=0",
              "trainer.seed=1,2,3,4", "tracking.log_model=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
              timeout=480)
    every = runs()
    (parent,) = [r for r in every if r.data.tags.get("dlrun.sweep") == "true"]
    jobs = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(every) == 5 and len(jobs) == 4, [(r.info.run_name, r.info.status) for r in every]
    assert sorted(r.data.params["trainer.seed"] for r in jobs) == ["1", "2", "3", "4"]
    for run in jobs:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("dlrun.error"))
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
            steps = sorted(m.step for m in mlflow_client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), (run.info.run_name, key, steps)
        assert "test/accuracy" in run.data.metrics and "objective/val" in run.data.metrics
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/finished"] == 4 and parent.data.metrics["sweep/failed"] == 0


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="hydra-joblib-launcher not installed (dev extra)")
def test_a_job_failing_in_a_joblib_worker_fails_the_sweep_command(run_process, runs):
    # the job fails in another process: the command learns it from the sweep's summary
    run_process("train", "-m", "trainer=smoke", "tracking.log_model=false", "model.dropout=0.1,1.5",
              "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", expect=2)
    (parent,) = [r for r in runs() if r.data.tags.get("dlrun.sweep") == "true"]
    assert parent.data.metrics["sweep/failed"] == 1 and parent.data.metrics["sweep/finished"] == 1


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.e2e
def test_two_workers_train_one_model_and_only_the_chief_logs_and_saves(tmp_path, mlflow_client, runs, workdir):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    store = f"sqlite:///{workdir}/mlflow.db"  # the chief's store; the worker must never open it
    args = ["train", *FAST, "strategy=multi_worker", "trainer.epochs=2", "trainer.batch_size=16",
            f"tracking.uri={store}"]
    procs, folders = [], []
    for index in range(2):
        folder = tmp_path / f"worker{index}"  # each worker in a folder of its own, as on two machines
        folder.mkdir()
        folders.append(folder)
        env = dlrun_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([DLRUN, *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=480))
    finally:
        for proc in procs:
            proc.kill()
    for index, (proc, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert proc.returncode == 0, f"worker {index} exited {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    (run,) = runs()  # exactly one run: the chief's (worker 0; the cluster has no "chief" task)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["strategy.workers"] == "2" and params["strategy.replicas"] == "2"
    # the global batch is split across the workers: 16 per replica, 32 per step in all
    assert params["trainer.batch_size"] == "16" and params["trainer.global_batch_size"] == "32"
    assert run.data.tags["dlrun.strategy"] == "MultiWorkerMirroredStrategy"
    steps = sorted(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == [1, 2]
    assert "test/accuracy" in run.data.metrics
    # the chief keeps its run folder and model; the worker left nothing in its folder
    assert list((folders[0] / "outputs").glob("*/*/served/model.keras"))
    assert sorted(p.name for p in folders[1].iterdir()) == [], list(folders[1].rglob("*"))


# -- GPU pool: the assignment logic (no GPU needed) ------------------------------------------------

def test_gpu_slices_rotate_over_the_pool():
    from dlrun.sweep import gpu_slice

    four = ["0", "1", "2", "3"]
    assert [gpu_slice(j, 1, four) for j in range(6)] == [["0"], ["1"], ["2"], ["3"], ["0"], ["1"]]
    assert [gpu_slice(j, 2, four) for j in range(3)] == [["0", "1"], ["2", "3"], ["0", "1"]]
    assert [gpu_slice(j, 2, ["0", "1", "2"]) for j in range(2)] == [["0", "1"], ["0", "1"]]  # GPU 2 left over
    assert gpu_slice(0, 1, ["5", "7"]) == ["5"] and gpu_slice(1, 1, ["5", "7"]) == ["7"]  # ids, not positions
    assert gpu_slice(3, 0, four) is None  # pool off
    assert gpu_slice(0, 2, ["0"]) is None  # fewer GPUs than one slice: leave them alone
    assert gpu_slice(0, 1, []) is None


def test_pin_gpus_sets_the_slice_from_the_original_pool(monkeypatch):
    import sys

    from dlrun import sweep

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv(sweep.POOL_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4,5")
    assert sweep.pin_gpus(5, 1) == ["3"]
    assert sweep.visible_gpus() == ["2", "3", "4", "5"]  # the pool, not this job's slice
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert sweep.pin_gpus(2, 2) == ["2", "3"]  # a later job in a fresh process slices the same pool
    monkeypatch.delenv(sweep.POOL_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU (tests, CPU machines): nothing to do
    assert sweep.pin_gpus(0, 1) is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # TensorFlow started: keep its devices
    assert sweep.pin_gpus(1, 1) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_only_parallel_launchers_on_this_machine_get_the_pool(monkeypatch):
    import os
    import sys

    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dlrun import sweep
    from dlrun.errors import DlrunError

    def config(target, mode=RunMode.MULTIRUN, num=1, gpus=1):
        return OmegaConf.create({"sweep": {"gpus_per_job": gpus},
                                 "hydra": {"mode": mode, "job": {"num": num}, "launcher": {"_target_": target}}})

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    for target, mode, expected in [
        (joblib, RunMode.MULTIRUN, "b"),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", RunMode.MULTIRUN, "a,b,c"),
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", RunMode.MULTIRUN, "a,b,c"),
        (joblib, RunMode.RUN, "a,b,c"),
    ]:
        monkeypatch.delenv(sweep.POOL_ENV, raising=False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "a,b,c")
        sweep.SweepRun().on_job_start(config(target, mode), task_function=None)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == expected, target
    with pytest.raises(DlrunError, match="sweep.gpus_per_job"):  # config.validate, in the job
        sweep.gpus_per_job(config(joblib, gpus=-1))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "a,b,c")
    sweep.SweepRun().on_job_start(config(joblib, gpus="x"), task_function=None)  # no pool, no crash
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "a,b,c"


def test_non_chief_workers_are_told_from_the_environment():
    from dlrun.strategy import non_chief_worker

    mw = ["strategy=multi_worker"]

    def tf_config(kind, index, chief=False):
        cluster = {"worker": ["h:1", "h:2"], **({"chief": ["h:0"]} if chief else {})}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}

    assert not non_chief_worker(mw, tf_config("worker", 0))  # worker 0 is the chief without a chief task
    assert non_chief_worker(mw, tf_config("worker", 1))
    assert non_chief_worker(mw, tf_config("worker", 0, chief=True))
    assert not non_chief_worker(mw, tf_config("chief", 0, chief=True))
    assert not non_chief_worker(["strategy=auto"], tf_config("worker", 1))  # not a multi-worker command
    assert not non_chief_worker(mw, {})
    slurm = [*mw, "strategy.cluster_resolver=slurm"]
    assert non_chief_worker(slurm, {"SLURM_PROCID": "3"}) and not non_chief_worker(slurm, {"SLURM_PROCID": "0"})

"""Sweeps as one MLflow parent run: `dlrun train -m a=1,2 b=x,y`.

A Hydra callback (configured in config.yaml under hydra.callbacks) opens the parent run before
the first job and writes its id into the sweep folder; every job, in this process or in a
launcher's worker process, reads it there and starts its own run as a child
(`tracking.parent_run_id`, which a user may also set to attach separate processes to one
parent). When the sweep ends the callback logs the summary on the parent: one row per job
(overrides, status, the objective on validation data), the best job, and the counts of
finished and failed jobs; the parent ends FINISHED, or FAILED when no job finished.

GPU pool: when a launcher runs jobs side by side on this machine (`hydra/launcher=joblib`),
each job's process gets its own `sweep.gpus_per_job` GPUs through CUDA_VISIBLE_DEVICES, set
in `on_job_start` before the job imports TensorFlow: job number modulo the number of slices
of the visible GPUs, so parallel jobs never pile onto GPU 0 (see `gpu_slice`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

PARENT_FILE = "mlflow_parent_run_id"
POOL_ENV = "DLRUN_GPU_POOL"  # the GPUs the sweep started with (a job's own CUDA_VISIBLE_DEVICES is its slice)
# launchers whose jobs do not share this machine's GPUs side by side: Hydra's basic launcher
# runs them one after another in this process; SLURM gives each job its own GPUs (--gpus-per-task)
OWN_DEVICES = ("BasicLauncher", "SlurmLauncher")


@dataclass(frozen=True)
class JobFailed:
    """What a sweep job returns when dlrun rejected or stopped it with a reason (a DlrunError: a
    bad value, a NaN loss); the reason is also on the console and on the job's MLflow run."""

    reason: str
    run_id: str | None = None


def parent_of(sweep_dir: str | Path) -> str | None:
    """The parent run id written into a sweep folder (None if the sweep is not tracked)."""
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() or None if path.is_file() else None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, found without starting TensorFlow (which would fix the
    devices of this process): CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`."""
    env = os.environ.get(POOL_ENV, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if env is not None:
        ids = []
        for d in (d.strip() for d in env.split(",")):
            if not d or d.startswith("-"):  # CUDA stops at the first invalid entry ("-1" hides all)
                break
            ids.append(d)
        return ids
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, _ in enumerate(ln for ln in out.stdout.splitlines() if ln.startswith("GPU "))]


def gpu_slice(job_num: int, gpus_per_job: int, visible: list[str]) -> list[str] | None:
    """The GPUs of job `job_num`: the visible GPUs cut into consecutive slices of
    `gpus_per_job`, slice number `job_num` modulo the number of slices (GPUs left over after
    the last whole slice stay unused). None: leave the job's devices alone (pool off, or fewer
    GPUs than one slice)."""
    if gpus_per_job < 1 or len(visible) < gpus_per_job:
        return None
    slices = len(visible) // gpus_per_job
    k = job_num % slices
    return visible[k * gpus_per_job:(k + 1) * gpus_per_job]


def pin_gpus(job_num: int, gpus_per_job: int) -> list[str] | None:
    """Set CUDA_VISIBLE_DEVICES of this job's process to its slice; returns it (None: unchanged).

    A process that already started TensorFlow (a launcher worker running its second job) keeps
    the GPUs of its first job: devices cannot change once TensorFlow has started, and one
    process runs one job at a time, so jobs still do not share a slice.
    """
    if "tensorflow" in sys.modules:
        return None
    visible = visible_gpus()
    chosen = gpu_slice(job_num, gpus_per_job, visible)
    if chosen is not None:
        os.environ.setdefault(POOL_ENV, ",".join(visible))
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    return chosen


def gpus_per_job(config, strict: bool = True) -> int:
    """sweep.gpus_per_job of a config (0 when absent). A bad value is a DlrunError when strict
    (config.validate, in the job), else 0: Hydra turns a callback's exception into a warning."""
    from dlrun.errors import DlrunError

    value = (config.get("sweep") or {}).get("gpus_per_job", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if not strict:
            return 0
        raise DlrunError(f"sweep.gpus_per_job must be a whole number >= 0, got {value!r}",
                         "0 turns the GPU pool off")
    return value


class SweepRun(Callback):
    """Parent run at the start of a multirun, summary at its end, a GPU slice per job."""

    def on_job_start(self, config, **kwargs: Any) -> None:
        from hydra.types import RunMode

        launcher = str((config.hydra.get("launcher") or {}).get("_target_", ""))
        if config.hydra.mode != RunMode.MULTIRUN or launcher.rsplit(".", 1)[-1] in OWN_DEVICES:
            return
        pin_gpus(int(config.hydra.job.num), gpus_per_job(config, strict=False))

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        tracking = config.get("tracking")
        if tracking is None or not tracking.get("enabled", True) or tracking.get("parent_run_id"):
            return
        from dlrun.startup import paused_gc

        with paused_gc():  # MLflow's and its store's modules are imported here
            from mlflow.tracking import MlflowClient

            from dlrun.tracking import open_store, quiet_mlflow_logs, store_errors

            quiet_mlflow_logs()
            client = MlflowClient(tracking_uri=tracking.get("uri") or None)
            open_store(client.tracking_uri)
        if reopen(client, config.hydra.sweep.dir):  # the folder's sweep goes on (hparams_search=optuna)
            global FAILED_BEFORE
            with contextlib.suppress(Exception):
                FAILED_BEFORE = int(client.get_run(parent_of(config.hydra.sweep.dir)).data.metrics.get("sweep/failed", 0))
            return
        experiment = tracking.get("experiment") or config.task.name
        overrides = list(config.hydra.overrides.task)
        with store_errors(client.tracking_uri):
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
            run = client.create_run(exp_id, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", tags={
                "dlrun.sweep": "true", "dlrun.overrides": " ".join(overrides)[:5000],
                "dlrun.sweep_dir": str(Path(config.hydra.sweep.dir).resolve())})
        folder = Path(config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PARENT_FILE).write_text(run.info.run_id)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        parent = parent_of(config.hydra.sweep.dir)
        if parent is None or os.environ.get("DLRUN_SWEEP_WORKER"):  # an Optuna worker: its first process summarizes
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=config.tracking.get("uri") or None)
        with contextlib.suppress(Exception):  # a summary must never turn a finished sweep into a crash
            global FAILED_JOBS
            FAILED_JOBS = int(summarize(client, parent)["failed"]) - FAILED_BEFORE


# jobs of this sweep command that failed, as the summary counts them (minus those of an earlier
# command the sweep resumes): jobs that ran in other processes (hydra/launcher=joblib, Optuna
# workers) fail there, so the command's exit code reads this
FAILED_JOBS = 0
FAILED_BEFORE = 0


def reopen(client, sweep_dir) -> bool:
    """A sweep folder that already has a parent run (an Optuna study resumed with the same command,
    or one of its worker processes): that run is the parent again, RUNNING until the summary."""
    parent = parent_of(sweep_dir)
    if parent is None:
        return False
    try:
        if client.get_run(parent).info.status != "RUNNING":
            client.update_run(parent, status="RUNNING")
    except Exception:  # gone from this store: start a new parent
        return False
    return True


def record_failure(cfg, overrides: list[str], reason: str, sweep_dir) -> None:
    """A FAILED child run for a job whose config was rejected before its run began (a bad value
    in the grid), so the sweep's table and counts show it."""
    parent = cfg.tracking.get("parent_run_id") or parent_of(sweep_dir)
    if parent is None or not cfg.tracking.enabled:
        return
    from mlflow.tracking import MlflowClient

    with contextlib.suppress(Exception):  # recording a failure must not fail the sweep
        client = MlflowClient(tracking_uri=cfg.tracking.get("uri") or None)
        exp = client.get_run(parent).info.experiment_id
        run = client.create_run(exp, run_name=f"job-{'-'.join(o.split('=', 1)[-1] for o in overrides)[:60]}",
                                tags={"mlflow.parentRunId": parent, "dlrun.overrides": " ".join(overrides)[:5000],
                                      "dlrun.error": reason[:5000]})
        client.set_terminated(run.info.run_id, "FAILED")


def summarize(client, parent: str) -> dict:
    """Log the sweep table, the best job and the counts on the parent run; end it."""
    from mlflow.entities import Metric

    parent_run = client.get_run(parent)
    children = client.search_runs([parent_run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    rows, best = [], None
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        value = metrics.get("objective/val")
        rows.append({"run": child.info.run_name, "run_id": child.info.run_id, "status": child.info.status,
                     "overrides": tags.get("dlrun.overrides", ""), "objective": tags.get("dlrun.objective", ""),
                     "value": value, "error": tags.get("dlrun.error", "")})
        if value is None or child.info.status != "FINISHED":
            continue
        maximize = tags.get("dlrun.objective_maximize") == "true"
        if best is None or (value > best[1] if maximize else value < best[1]):
            best = (child, value)
    finished = sum(r["status"] == "FINISHED" for r in rows)
    failed = sum(r["status"] == "FAILED" for r in rows)
    now = int(time.time() * 1000)
    metrics = [Metric("sweep/jobs", len(rows), now, 0), Metric("sweep/finished", finished, now, 0),
               Metric("sweep/failed", failed, now, 0)]
    tags = {}
    if best is not None:
        metrics.append(Metric("sweep/best_value", float(best[1]), now, 0))
        tags = {"dlrun.best_run_id": best[0].info.run_id, "dlrun.best_overrides": best[0].data.tags.get("dlrun.overrides", ""),
                "dlrun.objective": best[0].data.tags.get("dlrun.objective", "")}
    client.log_batch(parent, metrics=metrics)
    for k, v in tags.items():
        client.set_tag(parent, k, v)
    client.log_text(parent, json.dumps(rows, indent=1, default=str), "tables/sweep.json")
    client.set_terminated(parent, "FINISHED" if finished else "FAILED")
    return {"rows": rows, "best": best[0].info.run_id if best else None, "finished": finished, "failed": failed}

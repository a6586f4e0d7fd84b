"""Sweeps as one MLflow parent run: `dlrun train -m a=1,2 b=x,y`.

A Hydra callback (configured in config.yaml under hydra.callbacks) opens the parent run before
the first job and writes its id into the sweep folder; every job, in this process or in a
launcher's worker process, reads it there and starts its own run as a child
(`tracking.parent_run_id`, which a user may also set to attach separate processes to one
parent). When the sweep ends the callback logs the summary on the parent: one row per job
(overrides, status, the objective on validation data), the best job, and the counts of
finished and failed jobs; the parent ends FINISHED, or FAILED when no job finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

PARENT_FILE = "mlflow_parent_run_id"


def parent_of(sweep_dir: str | Path) -> str | None:
    """The parent run id written into a sweep folder (None if the sweep is not tracked)."""
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() or None if path.is_file() else None


class SweepRun(Callback):
    """Parent run at the start of a multirun, summary at its end."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        tracking = config.get("tracking")
        if tracking is None or not tracking.get("enabled", True) or tracking.get("parent_run_id"):
            return
        from mlflow.tracking import MlflowClient

        from dlrun.tracking import open_store, quiet_mlflow_logs, store_errors

        quiet_mlflow_logs()
        client = MlflowClient(tracking_uri=tracking.get("uri") or None)
        open_store(client.tracking_uri)
        if reopen(client, config.hydra.sweep.dir):  # the folder's sweep goes on (hparams_search=optuna)
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
            summarize(client, parent)


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
    if parent is None or not cfg.tracking.get("enabled", True):
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

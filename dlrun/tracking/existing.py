"""Logging to a finished run without touching its status (dlrun eval, dlrun explain, dlrun export)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path


def log_to_existing_run(tracking_cfg, run_id: str, metrics: dict, tables: dict | None = None,
                        record=None, prefix: str = "eval", files: dict | None = None) -> None:
    """Add metrics, tables, files (under `prefix/`) and an evaluation dataset to a run without
    touching its status (dlrun eval)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.datasets import dataset_input, mlflow_dataset, no_integer_schema_warning

    client = MlflowClient(tracking_uri=tracking_cfg.uri or None)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])
    for name, rows in (tables or {}).items():
        client.log_text(run_id, json.dumps(rows, indent=1, default=str), f"tables/{prefix}/{name}.json")
    for name, path in (files or {}).items():
        client.log_artifact(run_id, str(path), str(Path(prefix) / Path(name).parent))
    if record is not None:
        with contextlib.suppress(Exception), no_integer_schema_warning():  # a record must never fail an eval
            ds = mlflow_dataset(record)
            if ds is not None:
                client.log_inputs(run_id, datasets=[dataset_input(ds, record.context)])

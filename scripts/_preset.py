"""Shared by the scripts/*_quality.py: one `dlrun train` in a fresh folder with its own MLflow
store, and the finished run read back while the folder still exists."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Trained:
    command: str
    wall_s: float
    returncode: int
    run: Any = None  # the MLflow run (None when dlrun failed)
    client: Any = None

    @property
    def metrics(self) -> dict:
        return self.run.data.metrics if self.run else {}

    def failed(self, preset: str) -> dict:
        return {"preset": preset, "command": self.command, "error": self.returncode, "wall_s": round(self.wall_s, 1)}


@contextlib.contextmanager
def trained(args: list[str], overrides: list[str], name: str):
    """`with trained(["experiment=cnn"], overrides, "cnn") as t:` -> Trained (t.run is None on failure,
    after dlrun's output tail was printed)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix=f"dlrun-{name}-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cmd = ["dlrun", "train", *args, *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              capture_output=True, text=True)
        t = Trained(" ".join(cmd), time.perf_counter() - start, proc.returncode)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        else:
            t.client = MlflowClient(tracking_uri=uri)
            t.run = [r for e in t.client.search_experiments() for r in t.client.search_runs([e.experiment_id])][0]
        yield t


def run_all(argv: list[str], presets: tuple, run) -> int:
    """The scripts' command line: preset names (default `presets`) and key=value overrides; each
    preset's result dict (from `run(preset, overrides)`) printed as JSON; exit code 1 when one
    missed its bar or failed."""
    import json

    names = [a for a in argv if "=" not in a] or list(presets)
    overrides = [a for a in argv if "=" in a]
    results = [run(p, overrides) for p in names]
    print(json.dumps(results, indent=1))
    return 0 if all(r.get("pass", "error" not in r) for r in results) else 1

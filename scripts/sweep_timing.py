"""Wall time of a 4-job sweep run in parallel (hydra/launcher=joblib, n_jobs=4) against the
same 4 jobs one after another (Hydra's basic launcher), on the insurance preset.

    nice -n 10 python scripts/sweep_timing.py [--epochs 20] [--jobs 4]

Each variant runs in a fresh temporary folder with its own SQLite store; the script checks
that every job finished in MLflow and prints the two wall times and their ratio. On a machine
with N cores the parallel sweep can at best be min(jobs, N) times faster, less the start-up of
the worker processes (each imports TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(folder: Path, epochs: int, jobs: int, parallel: bool) -> float:
    dlrun = shutil.which("dlrun", path=str(Path(sys.executable).parent)) or "dlrun"
    seeds = ",".join(str(i + 1) for i in range(jobs))
    args = [dlrun, "train", "-m", "experiment=insurance", f"trainer.epochs={epochs}", f"trainer.seed={seeds}",
            "tracking.system_metrics=false"]
    if parallel:
        args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({'parallel' if parallel else 'sequential'}):\n{proc.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.mlflow.parentRunId != ''")
    finished = sum(r.info.status == "FINISHED" for r in runs)
    if finished != jobs:
        sys.exit(f"{finished} of {jobs} jobs finished ({'parallel' if parallel else 'sequential'})")
    return seconds


def _env() -> dict:
    """This process' environment; CPU only unless CUDA_VISIBLE_DEVICES says otherwise."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=4)
    a = parser.parse_args()
    times = {}
    for parallel in (False, True):
        with tempfile.TemporaryDirectory(prefix="dlrun-sweep-timing-") as tmp:
            times[parallel] = sweep(Path(tmp), a.epochs, a.jobs, parallel)
            print(f"{'joblib n_jobs=' + str(a.jobs) if parallel else 'one after another':<20} "
                  f"{times[parallel]:7.1f} s", flush=True)
    print(f"speed-up {times[False] / times[True]:.2f}x with {os.cpu_count()} CPU cores "
          f"({a.jobs} jobs, {a.epochs} epochs each)")


if __name__ == "__main__":
    main()

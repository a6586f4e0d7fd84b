"""The insurance preset against its baselines over several split seeds (real CLI, real store).

    python scripts/tabular_quality.py                 # split seeds 42 1 2 3
    python scripts/tabular_quality.py --seeds 42 7

Each seed runs `dlrun train experiment=insurance task.split.seed=S` in one temporary folder
(its own MLflow store); the network's and the baselines' test accuracy are read back from the
runs. One 300-row test split moves accuracy by about ±0.02 (one standard error), so a single
seed cannot rank the network against logistic regression; the mean over seeds can.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = {"network": "test/accuracy", "linear": "baseline/linear/accuracy",
        "random_forest": "baseline/random_forest/accuracy"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3])
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    dlrun = str(Path(sys.executable).parent / "dlrun")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlrun-tabular-") as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        for seed in args.seeds:
            subprocess.run([dlrun, "train", "experiment=insurance", f"task.split.seed={seed}",
                            "trainer.progress=false", f"tracking.run_name=seed-{seed}"],
                           cwd=tmp, check=True, capture_output=True)
            exp = client.get_experiment_by_name("tabular")
            (run,) = client.search_runs([exp.experiment_id], f"attributes.run_name = 'seed-{seed}'")
            rows.append({name: run.data.metrics[key] for name, key in KEYS.items()})
            print(f"split seed {seed:>3}: " + "  ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()))
    print("mean           : " + "  ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f}" for k in KEYS))


if __name__ == "__main__":
    main()

"""Train the image presets with the real CLI and print their test accuracy and wall time.

    python scripts/image_quality.py                    # cnn (quality bar: test accuracy >= 0.98)
    python scripts/image_quality.py cnn vgg mnist_mlp transfer
    python scripts/image_quality.py cnn trainer.seed=1

Each preset runs as `dlrun train experiment=NAME [overrides]` in a temporary folder with its own
MLflow store (sqlite), so the number is exactly what a user gets; the test metrics are read
back from the MLflow run. Exit code 1 when experiment=cnn misses the bar.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ("cnn",)
BARS = {"cnn": 0.98}  # preset -> minimum test accuracy


def run(preset: str, overrides: list[str]) -> dict:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix=f"dlrun-{preset}-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        cmd = ["dlrun", "train", f"experiment={preset}", *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return {"preset": preset, "command": " ".join(cmd), "error": proc.returncode, "wall_s": round(wall, 1)}
        client = MlflowClient(tracking_uri=uri)
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        m = runs[0].data.metrics
    result = {"preset": preset, "command": " ".join(cmd), "wall_s": round(wall, 1),
              "fit_s": round(m.get("timing/fit_seconds", float("nan")), 1),
              "epochs": int(m.get("timing/epochs", 0)), "params": int(runs[0].data.params.get("model.params", 0))}
    result.update({k: round(v, 4) for k, v in sorted(m.items()) if k in (
        "test/accuracy", "test/top3_accuracy", "test/loss", "test/f1_macro")})
    if preset in BARS:
        result["pass"] = result.get("test/accuracy", 0.0) >= BARS[preset]
    print(f"experiment={preset}: test accuracy {result.get('test/accuracy')} in {wall:.1f} s wall "
          f"({result['fit_s']} s fit, {result['epochs']} epochs, {result['params']:,} params)", flush=True)
    return result


def main(argv: list[str]) -> int:
    presets = [a for a in argv if "=" not in a] or list(PRESETS)
    overrides = [a for a in argv if "=" in a]
    results = [run(p, overrides) for p in presets]
    print(json.dumps(results, indent=1))
    return 0 if all(r.get("pass", "error" not in r) for r in results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))

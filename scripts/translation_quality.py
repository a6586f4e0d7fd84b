"""Train the translation preset with the real CLI and print its test numbers beside the baselines.

    python scripts/translation_quality.py                     # experiment=translation
    python scripts/translation_quality.py trainer.seed=1 data.seed=7

The run is `dlrun train experiment=translation [overrides]` in a temporary folder with its own
MLflow store; the metrics are read back from the run. The quality bar (issue 8): exact match
>= 0.95 on the embedded test set. Exit code 1 when the run misses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

BAR = 0.95


def main(overrides: list[str]) -> int:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="dlrun-translation-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cmd = ["dlrun", "train", "experiment=translation", *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return 2
        client = MlflowClient(tracking_uri=uri)
        run = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])][0]
        m = run.data.metrics
        epochs = len(client.get_metric_history(run.info.run_id, "train/loss"))
    print(f"command: {' '.join(cmd)}   ({epochs} epochs, {wall:.0f} s wall)")
    print(f"{'model':<22}{'exact_match':>12}{'token_acc':>11}{'bleu':>8}")
    for name, prefix in (("seq2seq_transformer", "test"), ("copy", "baseline/copy"),
                         ("most_frequent", "baseline/most_frequent")):
        if f"{prefix}/exact_match" in m:
            print(f"{name:<22}{m[f'{prefix}/exact_match']:>12.4f}{m[f'{prefix}/token_accuracy']:>11.4f}"
                  f"{m[f'{prefix}/bleu']:>8.2f}")
    ok = m["test/exact_match"] >= BAR
    print(f"bar: exact match >= {BAR}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Measure dlrun's overhead: training throughput against plain Keras, and start-up times.

    python scripts/benchmark.py [--epochs 50] [--repeats 3] [--out results.json]
    python scripts/benchmark.py --preset text_transformer --epochs 5 --repeats 3

1. Throughput. The insurance preset's network (3 -> Dense 50 -> Dense 3, Adam, batch 32) on
   the same rows, trained three ways, interleaved `repeats` times, median fit time each:
   - dlrun:            `dlrun train experiment=insurance` (MLflow on, checkpoint on, progress
                       on); its own `timing/fit_seconds` metric, read from the MLflow store
   - keras (numpy):    a plain script, model.fit(x, y, validation_data=..., verbose=0)
   - keras (tf.data):  the same script fed the same tf.data pipeline dlrun builds
   ratio = keras fit time / dlrun fit time (>= 1 means dlrun is as fast or faster).
   With `--preset text_transformer` (issue 8's bar: within 0.95 of plain Keras): the preset's
   transformer, built and compiled exactly as dlrun builds it, fed dlrun's own tf.data
   splits, trained by a bare `model.fit(..., verbose=0)` vs `dlrun train
   experiment=text_transformer` (early stopping off, so both run the same epochs).
2. Wall time of `dlrun --help`, of `dlrun train trainer=smoke` (whole process), and of
   `import tensorflow` alone (the floor of any run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DLRUN = shutil.which("dlrun", path=str(Path(sys.executable).parent)) or "dlrun"

PLAIN = r'''
import json, sys, time
import numpy as np, keras, tensorflow as tf
from hydra import compose, initialize_config_dir
from dlrun.config_tree import config_dir
from dlrun.config import validate
from dlrun.registry import TASKS
epochs, mode = int(sys.argv[1]), sys.argv[2]
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    cfg = validate(compose("config", overrides=["experiment=insurance"]))
keras.utils.set_random_seed(42)
data = TASKS.get("tabular")().data(cfg, 32)          # same rows, split and scaling as dlrun
a = data.arrays
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(50, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
t = time.perf_counter()
if mode == "numpy":
    model.fit(a["x_train"], a["y_train"], validation_data=(a["x_val"], a["y_val"]), batch_size=32,
              epochs=epochs, verbose=0)
else:
    model.fit(data.train, validation_data=data.val, epochs=epochs, verbose=0, shuffle=False)
print(json.dumps({"fit_seconds": time.perf_counter() - t}))
'''

# the same network and data as `dlrun train experiment=text_transformer`, trained by bare Keras
PLAIN_TEXT = r'''
import json, sys, time
import keras
from hydra import compose, initialize_config_dir
from dlrun.config_tree import config_dir
from dlrun.config import validate
from dlrun.registry import TASKS
epochs = int(sys.argv[1])
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    cfg = validate(compose("config", overrides=["experiment=text_transformer"]))
keras.utils.set_random_seed(42)
task = TASKS.get("text")()
data = task.data(cfg, int(cfg.trainer.batch_size))
model = task.build_model(cfg, data.info)
t = time.perf_counter()
model.fit(data.train, validation_data=data.val, epochs=epochs, verbose=0)
print(json.dumps({"fit_seconds": time.perf_counter() - t, "train": data.info.sizes["train"]}))
'''


def run(cmd, cwd, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t, proc


def dlrun_fit_seconds(work: Path, epochs: int) -> float:
    from mlflow.tracking import MlflowClient

    run([DLRUN, "train", "experiment=insurance", f"trainer.epochs={epochs}"], work)
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("tabular")
    (latest,) = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return latest.data.metrics["timing/fit_seconds"]


def text_transformer(work: Path, env: dict, epochs: int, repeats: int) -> dict:
    """dlrun vs bare Keras fit on the text_transformer preset (interleaved, medians)."""
    from mlflow.tracking import MlflowClient

    times: dict[str, list[float]] = {"dlrun": [], "keras": []}
    train = 0
    for _ in range(repeats):
        run([DLRUN, "train", "experiment=text_transformer", f"trainer.epochs={epochs}",
             "trainer.early_stopping.enabled=false"], work, env)
        client = MlflowClient(f"sqlite:///{work}/mlflow.db")
        exp = client.get_experiment_by_name("text")
        (latest,) = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        times["dlrun"].append(latest.data.metrics["timing/fit_seconds"])
        _, proc = run([sys.executable, "-c", PLAIN_TEXT, str(epochs)], work, env)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        times["keras"].append(out["fit_seconds"])
        train = out["train"]
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["keras"] / med["dlrun"]
    print(f"throughput, experiment=text_transformer, {epochs} epochs, median of {repeats}:")
    for k, v in med.items():
        print(f"  {k:<6} fit {v:6.2f} s   ({train * epochs / v:,.0f} texts/s)")
    print(f"  ratio keras/dlrun = {ratio:.2f} (issue 8's bar: >= 0.95)")
    return {"preset": "text_transformer", "epochs": epochs, "repeats": repeats, "fit_seconds": times,
            "fit_seconds_median": med, "ratio_vs_keras": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", choices=("insurance", "text_transformer"), default="insurance")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dlrun-bench-"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    if args.preset == "text_transformer":
        result = text_transformer(work, env, args.epochs, args.repeats)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        return

    times: dict[str, list[float]] = {"dlrun": [], "keras (numpy)": [], "keras (tf.data)": []}
    for _ in range(args.repeats):
        times["dlrun"].append(dlrun_fit_seconds(work, args.epochs))
        for mode, key in (("numpy", "keras (numpy)"), ("tfdata", "keras (tf.data)")):
            _, proc = run([sys.executable, "-c", PLAIN, str(args.epochs), mode], work, env)
            times[key].append(json.loads(proc.stdout.strip().splitlines()[-1])["fit_seconds"])
    med = {k: statistics.median(v) for k, v in times.items()}

    help_s = statistics.median(run([DLRUN, "--help"], work)[0] for _ in range(5))
    smoke_s = statistics.median(run([DLRUN, "train", "trainer=smoke"], work)[0] for _ in range(args.repeats))
    tf_s = statistics.median(run([sys.executable, "-c", "import tensorflow"], work, env)[0]
                             for _ in range(args.repeats))

    result = {
        "epochs": args.epochs, "repeats": args.repeats, "fit_seconds_median": med,
        "ratio_vs_keras_numpy": med["keras (numpy)"] / med["dlrun"],
        "ratio_vs_keras_tfdata": med["keras (tf.data)"] / med["dlrun"],
        "dlrun_help_seconds": help_s, "dlrun_smoke_seconds": smoke_s, "import_tensorflow_seconds": tf_s,
    }
    print(f"throughput, experiment=insurance, {args.epochs} epochs, median of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:<16} fit {v:6.2f} s   ({960 * args.epochs / v:,.0f} samples/s)")
    print(f"  ratio keras(numpy)/dlrun  = {result['ratio_vs_keras_numpy']:.2f}")
    print(f"  ratio keras(tf.data)/dlrun = {result['ratio_vs_keras_tfdata']:.2f}")
    print(f"dlrun --help              {help_s:.3f} s")
    print(f"dlrun train trainer=smoke {smoke_s:.1f} s (import tensorflow alone: {tf_s:.1f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

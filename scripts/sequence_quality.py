"""Train the sequence presets in-process and print their quality numbers and wall times.

    python scripts/sequence_quality.py                       # next_number, timeseries, seq2seq
    python scripts/sequence_quality.py timeseries trainer.epochs=5

Composes each preset with Hydra (configs/ beside this script), then runs the task the way the
runner does: data -> build_model -> fit -> evaluate, without MLflow. Checks the quality bar:
next_number predicts [70, 80, 90] within 5 of 100; timeseries beats both baselines on test MAE.
Figures go to outputs/sequence_quality/.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = ("next_number", "timeseries", "seq2seq")


def compose(preset: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dlrun.config import validate

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = hydra_compose("config", overrides=[f"experiment={preset}", "tracking=off", *overrides])
    return validate(cfg)


def run(preset: str, overrides: list[str]) -> dict:
    import keras

    from dlrun.registry import TASKS

    cfg = compose(preset, overrides)
    keras.utils.set_random_seed(int(cfg.trainer.seed))
    start = time.perf_counter()
    task = TASKS.get(cfg.task.name)()
    data = task.data(cfg, int(cfg.trainer.batch_size))
    data.info.steps_per_epoch = -(-data.info.sizes["train"] // int(cfg.trainer.batch_size))
    model = task.build_model(cfg, data.info)
    history = model.fit(data.train, validation_data=data.val, epochs=int(cfg.trainer.epochs), verbose=0)
    report = task.evaluate(cfg, task.serving(cfg, model, data), data)
    wall = time.perf_counter() - start
    m = report.metrics
    out = Path("outputs") / "sequence_quality"
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in report.figures.items():
        fig.savefig(out / f"{preset}_{name}", dpi=80)
    print(f"\n== experiment={preset} {' '.join(overrides)}  ({wall:.1f} s, {len(history.history['loss'])} epochs, "
          f"{model.count_params()} params)")
    for name, rows in report.tables.items():
        print(f"-- {name}")
        for row in rows:
            print("   " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    result = {"preset": preset, "wall_s": round(wall, 1), **{k: round(v, 4) for k, v in m.items()}}
    if preset == "next_number":
        p = m["predict/70_80_90"]
        result["pass"] = abs(p - 100) <= 5
        print(f"quality: [70,80,90] -> {p:.2f} (|diff| <= 5: {result['pass']})")
    elif preset == "timeseries":
        result["pass"] = m["test/mae"] < min(m["baseline/naive/mae"], m["baseline/moving_average/mae"])
        print(f"quality: test MAE {m['test/mae']:.4f} vs naive {m['baseline/naive/mae']:.4f}, "
              f"moving average {m['baseline/moving_average/mae']:.4f} (below both: {result['pass']})")
    return result


def main(argv: list[str]) -> int:
    presets = [a for a in argv if "=" not in a] or list(PRESETS)
    overrides = [a for a in argv if "=" in a]
    results = [run(p, overrides) for p in presets]
    print("\n" + json.dumps(results, indent=1))
    return 0 if all(r.get("pass", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

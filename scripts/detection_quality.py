"""Train the detection preset with the real CLI over several seeds and print its COCO-style test mAP
and wall time (mean ± std).

    python scripts/detection_quality.py                      # shapes_ssd, seeds 42 1 2 (bar on the mean:
                                                             # mAP@.5 >= 0.9, mAP >= 0.6)
    python scripts/detection_quality.py shapes_ssd --seeds 42 trainer.epochs=40

Each preset runs as `dlrun train experiment=NAME [overrides]` in a temporary folder with its own
MLflow store (sqlite); the metrics are read back from the MLflow run, so the numbers are what a
user gets. Exit code 1 when shapes_ssd misses the bar on the mean over the seeds.
"""

from __future__ import annotations

import sys

from _preset import run_all, trained

PRESETS = ("shapes_ssd",)
BARS = {"shapes_ssd": {"test/map50": 0.9, "test/map": 0.6}}
SHOWN = ("test/map", "test/map50", "test/map75", "test/map_small", "test/map_medium", "test/ar100",
         "val/map50", "baseline/untrained_ssd/map50", "test/images_per_second_batch1",
         "test/images_per_second_batch32")


def run(preset: str, overrides: list[str]) -> dict:
    with trained([f"experiment={preset}"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        runs = [t.run]
        m, wall, cmd = t.metrics, t.wall_s, t.command.split()
    result = {"command": " ".join(cmd), "wall_s": round(wall, 1),
              "fit_s": round(m.get("timing/fit_seconds", float("nan")), 1),
              "epochs": int(m.get("timing/epochs", 0)), "params": int(runs[0].data.params.get("model.params", 0))}
    result.update({k: round(m[k], 4) for k in SHOWN if k in m})
    print(f"experiment={preset}: test mAP@.5 {result.get('test/map50')}, mAP@[.5:.95] {result.get('test/map')} "
          f"in {wall:.1f} s wall ({result['fit_s']} s fit, {result['epochs']} epochs, {result['params']:,} params)",
          flush=True)
    return result


def check(preset: str, mean: dict) -> bool | None:
    return all(mean.get(k, 0.0) >= v for k, v in BARS[preset].items()) if preset in BARS else None


def main(argv: list[str]) -> int:
    return run_all(argv, PRESETS, run, check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Train the image presets with the real CLI over several seeds and print their test accuracy and
wall time (mean ± std).

    python scripts/image_quality.py                    # cnn, seeds 42 1 2 (bar: mean test accuracy >= 0.98)
    python scripts/image_quality.py cnn vgg mnist_mlp transfer
    python scripts/image_quality.py cnn --seeds 7 8 9 trainer.epochs=5

Each preset runs as `dlrun train experiment=NAME [overrides]` in a temporary folder with its own
MLflow store (sqlite), once per seed (trainer.seed), so the number is exactly what a user gets;
the test metrics are read back from the MLflow run. Exit code 1 when experiment=cnn misses the bar
on the mean.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _preset import run_all, trained

PRESETS = ("cnn",)
BARS = {"cnn": 0.98}  # preset -> minimum test accuracy


def run(preset: str, overrides: list[str]) -> dict:
    with trained([f"experiment={preset}"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        runs = [t.run]
        m, wall, cmd = t.metrics, t.wall_s, t.command.split()
    result = {"command": " ".join(cmd), "wall_s": round(wall, 1),
              "fit_s": round(m.get("timing/fit_seconds", float("nan")), 1),
              "epochs": int(m.get("timing/epochs", 0)), "params": int(runs[0].data.params.get("model.params", 0))}
    result.update({k: round(v, 4) for k, v in sorted(m.items()) if k in (
        "test/accuracy", "test/top3_accuracy", "test/loss", "test/f1_macro")})
    print(f"experiment={preset}: test accuracy {result.get('test/accuracy')} in {wall:.1f} s wall "
          f"({result['fit_s']} s fit, {result['epochs']} epochs, {result['params']:,} params)", flush=True)
    return result


def check(preset: str, mean: dict) -> bool | None:
    return mean.get("test/accuracy", 0.0) >= BARS[preset] if preset in BARS else None


def main(argv: list[str]) -> int:
    return run_all(argv, PRESETS, run, check)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))

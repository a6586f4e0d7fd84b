"""Train the translation preset with the real CLI over several seeds and print its test numbers
beside the baselines (mean ± std over the seeds).

    python scripts/translation_quality.py                     # experiment=translation, seeds 42 1 2
    python scripts/translation_quality.py --seeds 42 data.seed=7

Each run is `dlrun train experiment=translation trainer.seed=S [overrides]` in a temporary folder
with its own MLflow store; the metrics are read back from the run. The quality bar (issue 8):
exact match >= 0.95 on the embedded test set, on the mean. Exit code 1 when the mean misses it.
"""

from __future__ import annotations

import sys

from _preset import run_all, trained

BAR = 0.95
KEYS = [f"{p}/{m}" for p in ("test", "baseline/copy", "baseline/most_frequent")
        for m in ("exact_match", "token_accuracy", "bleu")]


def run(preset: str, overrides: list[str]) -> dict:
    with trained([f"experiment={preset}", "trainer.progress=false"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        m = t.metrics
        epochs = len(t.client.get_metric_history(t.run.info.run_id, "train/loss"))
    return {"command": t.command, "wall_s": round(t.wall_s, 1), "epochs": epochs, **{k: m[k] for k in KEYS if k in m}}


def check(preset: str, mean: dict) -> bool:
    return mean.get("test/exact_match", 0.0) >= BAR


def main(argv: list[str]) -> int:
    return run_all(argv, ("translation",), run, check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

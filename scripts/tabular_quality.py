"""The insurance preset against its baselines over several split seeds (real CLI, real store),
each number as mean ± std over the seeds.

    python scripts/tabular_quality.py                 # split seeds 42 1 2 3
    python scripts/tabular_quality.py --seeds 42 7

Each seed runs `dlrun train experiment=insurance task.split.seed=S` in a temporary folder (its own
MLflow store); the network's and the baselines' test accuracy are read back from the run. One
300-row test split moves accuracy by about ±0.02 (one standard error), so a single seed cannot
rank the network against logistic regression; the mean over seeds can. No bar (the README states
the means); exit code 1 only when a run fails.
"""

from __future__ import annotations

import sys

from _preset import run_all, trained

KEYS = {"network": "test/accuracy", "linear": "baseline/linear/accuracy",
        "random_forest": "baseline/random_forest/accuracy"}
SPLIT_SEEDS = (42, 1, 2, 3)


def run(preset: str, overrides: list[str]) -> dict:
    with trained([f"experiment={preset}", "trainer.progress=false"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        m = t.metrics
    return {"command": t.command, **{name: m[key] for name, key in KEYS.items()}}


def main(argv: list[str]) -> int:
    if "--seeds" not in argv:
        argv = [*argv, "--seeds", *map(str, SPLIT_SEEDS)]
    return run_all(argv, ("insurance",), run, seed_override=lambda s: [f"task.split.seed={s}"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

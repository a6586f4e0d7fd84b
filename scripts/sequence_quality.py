"""Train the sequence presets with the real CLI over several seeds and print their quality numbers
(mean ± std) beside the baselines.

    python scripts/sequence_quality.py                 # the three presets and the two defaults; seeds 42 1 2
    python scripts/sequence_quality.py timeseries --seeds 42 7 trainer.epochs=5

Each run is `dlrun train experiment=NAME trainer.seed=S [overrides]` ("sequence" is the plain
`dlrun train task=sequence`, "monthly_sales" is `dlrun train task=sequence data=monthly_sales`)
in a temporary folder with its own MLflow store; the metrics are read back from the run, so they
are what a user gets (early stopping and the best checkpoint included). The bars, checked on the
mean over the seeds: next_number predicts [70, 80, 90] within 5 of 100; timeseries and seq2seq
beat the naive and moving-average baselines on test MAE; the two defaults beat the naive and
seasonal naive ones (issue 19). Exit code 1 when one misses its bar.
"""

from __future__ import annotations

import sys

from _preset import run_all, trained

PRESETS = ("next_number", "timeseries", "seq2seq", "sequence", "monthly_sales")
DEFAULTS = {"sequence": ["task=sequence"], "monthly_sales": ["task=sequence", "data=monthly_sales"]}
SHOWN = ("test/mae", "baseline/naive/mae", "baseline/seasonal_naive/mae", "baseline/moving_average/mae",
         "baseline/ets/mae", "baseline/arima/mae", "predict/70_80_90", "predict/200_300_400", "timing/fit_seconds")


def run(preset: str, overrides: list[str]) -> dict:
    args = DEFAULTS.get(preset, [f"experiment={preset}"])
    with trained([*args, "trainer.progress=false"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        m = t.metrics
    return {"command": t.command, "wall_s": round(t.wall_s, 1), **{k: m[k] for k in SHOWN if k in m}}


def check(preset: str, mean: dict) -> bool | None:
    if preset == "next_number":
        return abs(mean["predict/70_80_90"] - 100) <= 5
    if preset in ("timeseries", "seq2seq"):
        return mean["test/mae"] < min(mean["baseline/naive/mae"], mean["baseline/moving_average/mae"])
    if preset in DEFAULTS:
        return mean["test/mae"] < min(mean["baseline/naive/mae"], mean["baseline/seasonal_naive/mae"])
    return None


def main(argv: list[str]) -> int:
    return run_all(argv, PRESETS, run, check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

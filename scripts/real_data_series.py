"""The sequence task's default on real public series, beside the baselines dlrun prints.

    python scripts/real_data_series.py DATA_DIR                      # every series, seeds 42 1 2
    python scripts/real_data_series.py DATA_DIR airline --seeds 42 7 data.window=24

DATA_DIR holds the CSV files of github.com/jbrownlee/Datasets (not shipped with dlrun):
airline-passengers.csv, monthly-car-sales.csv, daily-min-temperatures.csv, monthly-sunspots.csv.
Each series runs as a plain default `dlrun train task=sequence data=csv_series data.path=...
data.target=...` (the short monthly ones with data.window=12, as a new user would write it) in a
temporary folder with its own MLflow store, once per seed; the test MAE of the network and of
every baseline the run logged (baseline/*/mae) are read back and reported as mean ± std. The bar
(issue 19): the network's mean test MAE below the naive, seasonal naive and moving-average ones
(exit code 1 when missed); beside it, whether it also beats ETS and ARIMA, which a short series
may well favour (the run then warns, when it sees that on the validation part).
See docs/real_data_series.md for the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _preset import fmt, real_data, trained

BAR = ("naive", "seasonal_naive", "moving_average")  # the network must beat these on the mean
# name -> (file, target column, extra overrides, shape)
SERIES = {
    "airline": ("airline-passengers.csv", "Passengers", ["data.window=12"],
                "monthly, 144 points, trend + multiplicative yearly season"),
    "car_sales": ("monthly-car-sales.csv", "Sales", ["data.window=12"],
                  "monthly, 108 points, trend + yearly season"),
    "temperatures": ("daily-min-temperatures.csv", "Temp", [], "daily, 3,650 points, yearly season"),
    "sunspots": ("monthly-sunspots.csv", "Sunspots", [], "monthly, 2,820 points, ~11-year cycle"),
}


def run(folder: Path, name: str, overrides: list[str]) -> dict:
    file, target, extra, _ = SERIES[name]
    args = ["task=sequence", "data=csv_series", f"data.path={folder / file}", f"data.target={target}", *extra,
            "trainer.progress=false"]
    with trained(args, overrides, name) as t:
        if t.run is None:
            return t.failed(name)
        m, tags = t.metrics, t.run.data.tags
        result = {"command": t.command, "wall_s": round(t.wall_s, 1), "fit_s": m.get("timing/fit_seconds", 0.0),
                  "network": m["test/mae"]}
        result.update({k.split("/")[1]: v for k, v in sorted(m.items()) if k.startswith("baseline/")
                       and k.endswith("/mae")})
        result["warned"] = float(bool(tags.get("dlrun.warnings")))
    return result


def row(name: str, s: dict) -> tuple[str, bool]:
    mean, std = s["mean"], s["std"]
    baselines = [k for k in mean if k not in ("network", "wall_s", "fit_s", "warned")]
    wins = all(mean["network"] < mean[k] for k in baselines if k in BAR)
    beaten = [k for k in baselines if k not in BAR and mean["network"] < mean[k]]
    return (f"| {name} | {fmt(mean['network'], std['network'])} | "
            + " | ".join(f"{k} {fmt(mean[k], std[k])}" for k in baselines)
            + f" | {'wins' if wins else 'LOSES'} | {', '.join(beaten) or '-'} | {mean['fit_s']:.0f} s | "
              f"{mean['warned']:.2f} |"), wins


def main(argv: list[str]) -> int:
    return real_data(argv, __doc__, {n: v[0] for n, v in SERIES.items()},
                     lambda folder, name, overrides, extra: run(folder, name, [*overrides, *extra]), row,
                     "test MAE mean ± std; columns: series | network | baselines | beats naive, seasonal naive, "
                     "moving average | also beats | fit time | share of runs warned")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

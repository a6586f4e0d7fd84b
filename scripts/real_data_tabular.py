"""The tabular task's default on real public tables, beside the baselines dlrun prints.

    python scripts/real_data_tabular.py DATA_DIR                        # every table, seeds 42 1 2
    python scripts/real_data_tabular.py DATA_DIR banknote titanic --seeds 42 7 trainer.epochs=20

DATA_DIR holds public CSV files (not shipped with dlrun): from github.com/jbrownlee/Datasets
banknote_authentication.csv, pima-indians-diabetes.csv, sonar.csv, ionosphere.csv (headerless,
the class in the last column); from github.com/mwaskom/seaborn-data titanic.csv, of which
titanic_passengers.csv is the copy without the columns derived from the answer or from other
columns (alive, class, who, adult_male, embark_town, alone): 891 rows, string categories, 177
empty ages, a mostly empty deck. Also `insurance`: the embedded default (`dlrun train` as is).
Each table runs as a plain default `dlrun train data=csv data.path=... data.target=...` in a
temporary folder with its own MLflow store, once per seed (the seed also draws the split); the
test accuracy of the network and of every baseline the run logged are read back and reported as
mean ± std. The bar (issue 19): the network's mean test accuracy not below the best baseline's
(exit code 1 when missed). See docs/tabular.md for the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _preset import fmt, real_data, trained

# name -> (file or None for embedded, overrides, shape)
TABLES = {
    "insurance": (None, [], "embedded: 1,500 rows, 3 numeric features, 3 classes"),
    "banknote": ("banknote_authentication.csv", ["data.header=false", "data.target=-1"],
                 "1,372 rows, 4 numeric features, 2 classes"),
    "titanic": ("titanic_passengers.csv", ["data.target=survived"],
                "891 rows, 8 features (3 string), 177 empty ages, deck 77 % empty, 2 classes"),
    "pima": ("pima-indians-diabetes.csv", ["data.header=false", "data.target=-1"],
             "768 rows, 8 numeric features, 2 classes"),
    "sonar": ("sonar.csv", ["data.header=false", "data.target=-1"], "208 rows, 60 numeric features, 2 classes"),
    "ionosphere": ("ionosphere.csv", ["data.header=false", "data.target=-1"],
                   "351 rows, 34 numeric features, 2 classes"),
}


def run(folder: Path, name: str, overrides: list[str], seed_overrides: list[str]) -> dict:
    file, extra, _ = TABLES[name]
    data = [] if file is None else ["data=csv", f"data.path={folder / file}", *extra]
    seed = [o.split("=", 1)[1] for o in seed_overrides if o.startswith("trainer.seed=")]
    args = [*data, "trainer.progress=false", *(f"task.split.seed={s}" for s in seed)]
    with trained(args, [*overrides, *seed_overrides], name) as t:
        if t.run is None:
            return t.failed(name)
        m, tags = t.metrics, t.run.data.tags
        result = {"command": t.command, "fit_s": m.get("timing/fit_seconds", 0.0),
                  "epochs": m.get("timing/epochs", 0.0), "network": m["test/accuracy"]}
        result.update({k.split("/")[1]: v for k, v in sorted(m.items()) if k.startswith("baseline/")
                       and k.endswith("/accuracy")})
        result["warned"] = float("loses to" in tags.get("dlrun.warnings", ""))
    return result


def row(name: str, s: dict) -> tuple[str, bool]:
    mean, std = s["mean"], s["std"]
    baselines = [k for k in mean if k not in ("network", "fit_s", "epochs", "warned")]
    wins = all(mean["network"] >= mean[k] for k in baselines)
    return (f"| {name} | {TABLES[name][2]} | {fmt(mean['network'], std['network'])} | "
            + " | ".join(f"{k} {fmt(mean[k], std[k])}" for k in baselines)
            + f" | {'wins' if wins else 'LOSES'} | {mean['epochs']:.0f} | {mean['fit_s']:.0f} s | "
              f"{mean['warned']:.2f} |"), wins


def main(argv: list[str]) -> int:
    return real_data(argv, __doc__, {n: t[0] for n, t in TABLES.items()}, run, row,
                     "test accuracy mean ± std; columns: table | shape | network | baselines | not below the best "
                     "baseline | epochs trained | fit time | share of runs warned")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

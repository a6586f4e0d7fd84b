"""Tabular data sources: the embedded insurance generator, scikit-learn's bundled sets,
random features (the Keras binary example) and any CSV file.

Each returns a `Table`: a pandas DataFrame plus which column is the target. Splitting and
encoding happen in the tabular task, the same way for every source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun.errors import DlrunError
from dlrun.registry import DATA

# Insurance risk: cut points on the latent risk score (noise sd 0.46). With these the three
# groups hold ~28% / 40% / 32% of drivers and the best possible accuracy is ~0.80.
_RISK_NOISE = 0.46
_RISK_CUTS = (-0.187, 0.947)


@dataclass
class Table:
    frame: object  # pandas.DataFrame
    target: str
    problem: str  # "classification" | "regression"
    source: str
    class_names: list[str] | None = None
    test_rows: int | None = None  # the last N rows are a fixed test set (else: split by the task)


def insurance_frame(n: int, seed: int):
    """The course's car-insurance risk data, generated: speed (mph), age, miles (k/yr) -> group.

    group 0 = many accidents, 1 = few or none, 2 = in between. Risk rises with top speed,
    annual miles, youth (< 30) and old age (> 65); Gaussian noise on the latent score makes
    the classes overlap like the real 1,500-row course file.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(4.0, 9.0, n) + 18, 18, 90).round()
    speed = np.clip(rng.normal(125, 22, n), 75, 210).round()
    miles = np.clip(rng.gamma(3.0, 4.5, n) + 3, 3, 60).round(1)
    young = np.clip((30 - age) / 8, 0, None)
    old = np.clip((age - 65) / 10, 0, None)
    score = (speed - 125) / 22 + 1.2 * young + 0.6 * old + 0.7 * (miles - 16.5) / 7.8
    noisy = score + rng.normal(0, _RISK_NOISE, n)
    group = np.where(noisy >= _RISK_CUTS[1], 0, np.where(noisy < _RISK_CUTS[0], 1, 2))
    frame = pd.DataFrame({"speed": speed, "age": age, "miles": miles, "group": group})
    return frame, score


def insurance_oracle(score) -> np.ndarray:
    """The Bayes-style rule for the generator: cut the noise-free score (about 0.80 accurate)."""
    return np.where(score >= _RISK_CUTS[1], 0, np.where(score < _RISK_CUTS[0], 1, 2))


@DATA.register("insurance", "Car-insurance risk groups, generated like the course data (embedded)",
               tags=("tabular",))
def insurance(cfg) -> Table:
    frame, _ = insurance_frame(int(cfg.n_samples), int(cfg.seed))
    return Table(frame, "group", "classification", f"dlrun:insurance?n={cfg.n_samples}&seed={cfg.seed}",
                 class_names=["many accidents", "few or none", "in between"])


def _sklearn(loader_name: str, problem: str):
    def load(cfg) -> Table:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)(as_frame=True)
        frame = bunch.frame.copy()
        target = "target"
        names = [str(n) for n in bunch.target_names] if problem == "classification" else None
        return Table(frame, target, problem, f"sklearn.datasets.{loader_name}", class_names=names)

    return load


for _name, _loader, _problem, _desc in (
    ("iris", "load_iris", "classification", "Iris flowers, 150 rows, 3 classes (scikit-learn)"),
    ("wine", "load_wine", "classification", "Wine cultivars, 178 rows, 3 classes (scikit-learn)"),
    ("breast_cancer", "load_breast_cancer", "classification", "Breast cancer, 569 rows, 2 classes (scikit-learn)"),
    ("diabetes", "load_diabetes", "regression", "Diabetes progression, 442 rows, regression (scikit-learn)"),
):
    DATA.register(_name, _desc, tags=("tabular",))(_sklearn(_loader, _problem))


@DATA.register("random", "Random features with random labels (Keras binary example; plumbing)",
               tags=("tabular",))
def random_features(cfg) -> Table:
    import pandas as pd

    rng = np.random.default_rng(int(cfg.seed))
    n = int(cfg.n_train) + int(cfg.n_test)
    x = rng.random((n, int(cfg.n_features)))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = rng.integers(0, int(cfg.n_classes), n)
    return Table(frame, "label", "classification", f"dlrun:random?seed={cfg.seed}", test_rows=int(cfg.n_test))


@DATA.register("csv", "Any CSV file: data.path, data.target, optional data.features", tags=("tabular",))
def csv(cfg) -> Table:
    import pandas as pd

    frame = read_csv(cfg.path, sep=cfg.sep)
    target = str(cfg.target)
    if target not in frame.columns:
        raise DlrunError(f"{cfg.path}: no column '{target}'", f"columns: {', '.join(map(str, frame.columns))}")
    if cfg.features:
        missing = [c for c in cfg.features if c not in frame.columns]
        if missing:
            raise DlrunError(f"{cfg.path}: no column(s) {', '.join(missing)}",
                             f"columns: {', '.join(map(str, frame.columns))}")
        frame = frame[[*cfg.features, target]]
    frame = frame.dropna(subset=[target])
    categorical = set(cfg.categorical or [])
    unknown = categorical - set(frame.columns)
    if unknown:
        raise DlrunError(f"data.categorical: no column(s) {', '.join(sorted(map(str, unknown)))} in {cfg.path}")
    for col in frame.columns:
        if col == target:
            continue
        if frame[col].isna().any():
            row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise DlrunError(f"{cfg.path}: column '{col}' has an empty value at line {int(frame.index[row]) + 2}",
                             "fill or drop the missing values, or leave the column out with data.features")
        frame[col] = frame[col].astype(str) if col in categorical else _numeric_or_text(frame[col], col, cfg.path)
    problem = cfg.problem
    if problem == "auto":
        problem = infer_problem(frame[target])
    if problem not in ("classification", "regression"):
        raise DlrunError(f"data.problem: unknown value '{problem}'", "valid: auto, classification, regression")
    if problem == "regression":
        frame[target] = _numeric_or_text(frame[target], target, cfg.path)
        if not pd.api.types.is_numeric_dtype(frame[target]):
            raise DlrunError(f"{cfg.path}: target '{target}' is not numeric, cannot regress on it",
                             "use data.problem=classification")
    return Table(frame.reset_index(drop=True), target, problem, str(Path(cfg.path).resolve()))


def read_csv(path, sep: str = ","):
    """pandas.read_csv with one-line errors for the usual ways a file is wrong."""
    import pandas as pd

    p = Path(str(path))
    if not p.is_file():
        raise DlrunError(f"CSV file '{path}' does not exist")
    try:
        frame = pd.read_csv(p, sep=sep)
    except pd.errors.EmptyDataError:
        raise DlrunError(f"CSV file '{path}' is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DlrunError(f"CSV file '{path}' cannot be parsed: {str(e).splitlines()[0]}") from None
    if frame.empty or len(frame.columns) < 2:
        raise DlrunError(f"CSV file '{path}' has no data rows or only one column",
                         f"check data.sep (now '{sep}')")
    return frame


def _numeric_or_text(col, name: str, path):
    """Keep numbers numeric. A mostly-numeric column with a few non-numbers is junk: error with
    the column and the first bad line of the file (the header is line 1)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col):
        return col
    parsed = pd.to_numeric(col, errors="coerce")
    bad = parsed.isna() & col.notna()
    if bad.any() and bad.mean() <= 0.2 and parsed.notna().sum() > 0:
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DlrunError(f"{path}: column '{name}' has a non-numeric value {col.iloc[row]!r} at line {row + 2}",
                         "fix the file or list the column in data.categorical")
    return parsed if not bad.any() else col.astype(str)


def infer_problem(target) -> str:
    """Text, booleans or few distinct integers -> classification; otherwise regression."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna().to_numpy()
    integral = np.all(np.equal(np.mod(values, 1), 0))
    return "classification" if integral and len(np.unique(values)) <= max(20, int(0.05 * len(values))) \
        and len(np.unique(values)) < len(values) else "regression"

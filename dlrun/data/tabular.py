"""Tabular data sources: the embedded insurance generator, scikit-learn's bundled sets,
random features (the Keras binary example) and any CSV file.

Each returns a `Table`: a pandas DataFrame plus which column is the target. Splitting and
encoding happen in the tabular task, the same way for every source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    name: str = ""  # what the data is called in MLflow (file stem, generator or package set)
    warnings: list[str] = field(default_factory=list)  # shown, and logged as a run tag


def insurance_frame(n: int, seed: int):
    """The course's car-insurance risk data, generated: speed (mph), age, miles (k/yr) -> group.

    group 0 = many accidents, 1 = few or none, 2 = in between. Risk rises with top speed,
    annual miles, youth (< 30) and old age (> 65); Gaussian noise on the latent score makes
    the classes overlap like the real 1,500-row course file.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(4.0, 9.0, n) + 18, 18, 90).round().astype(int)
    speed = np.clip(rng.normal(125, 22, n), 75, 210).round().astype(int)
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


MISSING = ("impute", "drop", "error")  # data.missing: what empty feature cells get


@DATA.register("csv", "Any CSV file: data.path, data.target, optional data.features", tags=("tabular",))
def csv(cfg) -> Table:
    """A CSV table; the target and features by column name or index; rows with an empty target
    cell are dropped with a warning. Empty feature cells, by data.missing: impute (the default:
    the served model fills them, see data/preprocess.table; a warning for a mostly empty
    column), drop (rows with any, a warning with the count) or error (the first one named)."""
    import pandas as pd

    from dlrun.data.csv import column, first_empty, numeric, read_csv

    path = cfg.path
    frame = read_csv(path, sep=cfg.sep, header=bool(cfg.header), encoding=cfg.get("encoding"))
    target = column(frame, cfg.target, path)
    if cfg.features:
        features = [column(frame, c, path, "data.features") for c in cfg.features]
        frame = frame[[*dict.fromkeys(c for c in features if c != target), target]]
    warnings = []
    empty = int(frame[target].isna().sum())
    if empty:
        warnings.append(f"{path}: {empty} row(s) with an empty target '{target}' left out")
        frame = frame.dropna(subset=[target])
    missing = str(cfg.missing)
    if missing not in MISSING:
        raise DlrunError(f"data.missing: unknown value '{missing}'", f"valid: {', '.join(MISSING)}")
    features = [c for c in frame.columns if c != target]
    if missing == "drop":
        kept = frame.dropna(subset=features)
        if len(kept) < len(frame):
            warnings.append(f"{path}: {len(frame) - len(kept)} row(s) with an empty feature cell left out "
                            "(data.missing=drop)")
        frame = kept
    categorical = {column(frame, c, path, "data.categorical") for c in (cfg.categorical or [])}
    for col in features:
        if missing == "error":
            first_empty(frame[col], col, path, "set data.missing=impute or data.missing=drop, fill the values, or "
                                               "leave the column out with data.features")
        empty = int(frame[col].isna().sum())
        if empty > len(frame) / 2:
            warnings.append(f"{path}: column '{col}' is mostly empty ({empty} of {len(frame)} cells); "
                            "the served model fills its empty cells (data.missing=impute)")
        if col in categorical:
            frame[col] = frame[col].where(frame[col].isna(), frame[col].astype(str))
        else:
            frame[col] = numeric(frame[col], col, path)
    problem = cfg.problem
    if problem == "auto":
        problem = infer_problem(frame[target])
    if problem not in ("classification", "regression"):
        raise DlrunError(f"data.problem: unknown value '{problem}'", "valid: auto, classification, regression")
    if problem == "regression":
        frame[target] = numeric(frame[target], target, path)
        if not pd.api.types.is_numeric_dtype(frame[target]):
            raise DlrunError(f"{path}: target '{target}' is not numeric, cannot regress on it",
                             "use data.problem=classification")
    return Table(frame.reset_index(drop=True), target, problem, str(Path(path).resolve()),
                 name=Path(str(path)).stem, warnings=warnings)


def infer_problem(target) -> str:
    """Text, booleans or few distinct integers -> classification; otherwise regression."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna().to_numpy()
    integral = np.all(np.equal(np.mod(values, 1), 0))
    return "classification" if integral and len(np.unique(values)) <= max(20, int(0.05 * len(values))) \
        and len(np.unique(values)) < len(values) else "regression"

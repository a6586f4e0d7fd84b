"""Tabular task: a feature table -> class or value, an MLP, and scikit-learn baselines.

Rows are split (stratified for classes, seeded) into train/validation/test. Numeric columns
are standardised and text columns one-hot encoded by a Keras preprocessing model fitted on the
training rows only (data/preprocess.py); the served model puts it in front of the network and
answers with class names and probabilities, or values in the target's own units. The report
has the test metrics, per-class precision/recall/F1 and a confusion matrix, and the same
metrics for a linear model and a random forest trained on the same split ("baseline/*").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.data.pipeline import from_arrays, split_rows
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task


@dataclass
class TableInfo(DataInfo):
    """DataInfo plus what serving needs: raw feature columns, target values and scaling."""

    columns: list[str] | None = None  # the raw feature columns the served model takes
    class_values: list[str] | None = None  # the target's own values, as text, per class
    y_mean: float = 0.0  # regression: the network learns (y - y_mean) / y_std
    y_std: float = 1.0
    empty_cells: list | None = None  # rows {column, empty, share} of the table's empty feature cells


@TASKS.register("tabular", "Feature table -> class or value (MLP) with scikit-learn baselines")
class TabularTask(Task):
    name = "tabular"

    def data(self, cfg, batch_size: int) -> Data:
        from dlrun.data import preprocess

        table = DATA.build(cfg.data, "tabular")
        frame, target = table.frame, table.target
        features = [c for c in frame.columns if c != target]
        classification = table.problem == "classification"
        class_names = class_values = None
        if classification:
            class_values, y = _classes(frame[target])
            if len(class_values) < 2:
                raise DlrunError(f"target '{target}' has a single class"
                                 f" ({class_values[0] if class_values else 'no rows'})",
                                 "nothing to learn: check data.target and the file")
            class_names = table.class_names if table.class_names and len(table.class_names) == len(class_values) \
                else class_values
        else:
            y = frame[target].to_numpy(dtype="float32")
            if np.nanstd(y) == 0:
                raise DlrunError(f"target '{target}' is constant ({y[0]:g}): nothing to learn")

        idx = split_rows(len(frame), y, cfg, classification and bool(cfg.task.split.stratify), table.test_rows)
        pre, feature_names = preprocess.table(frame.iloc[idx["train"]], features,
                                              bool(cfg.data.get("standardize", True)))
        arrays = {}
        for s, i in idx.items():
            arrays[f"x_{s}"] = preprocess.transform(pre, preprocess.columns_of(frame.iloc[i], features))
            arrays[f"y_{s}"] = y[i]
        y_mean, y_std = 0.0, 1.0
        if not classification:  # train on a standardised target; the served model answers in its units
            y_mean, y_std = float(arrays["y_train"].mean()), float(arrays["y_train"].std() or 1.0)
        scale = (lambda v: (v - y_mean) / y_std) if not classification else (lambda v: v)
        seed = int(cfg.trainer.seed)
        train = from_arrays(arrays["x_train"], scale(arrays["y_train"]), batch_size, shuffle=True, seed=seed)
        val = from_arrays(arrays["x_val"], scale(arrays["y_val"]), batch_size) if len(idx["val"]) else None
        test = from_arrays(arrays["x_test"], scale(arrays["y_test"]), batch_size)

        n_classes = len(class_names) if classification else None
        name = table.name or str(cfg.data.name)
        info = TableInfo(
            name=name, input_shape=(len(feature_names),),
            target=("binary" if n_classes == 2 else "multiclass") if classification else "regression",
            num_classes=n_classes, class_names=class_names, feature_names=feature_names, target_column=target,
            source=table.source, sizes={s: len(i) for s, i in idx.items()}, columns=features,
            class_values=class_values, y_mean=y_mean, y_std=y_std,
            empty_cells=[{"column": c, "empty": int(n), "share": round(float(n) / len(frame), 4)}
                         for c in features if (n := frame[c].isna().sum())],
        )
        examples, records = {}, []
        for s, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
            rows = frame.iloc[idx[s]].reset_index(drop=True)
            truth = [class_values[k] for k in y[idx[s]]] if classification else rows[target].to_numpy()
            examples[s] = Examples(rows[features], np.asarray(truth), rows, name, table.source)
            if len(rows):
                records.append(DatasetRecord(name, table.source, context, rows, target))
        return Data(info, train, val, test, arrays=arrays, examples=examples, records=records, preprocess=pre,
                    warnings=list(table.warnings))

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        """rmse for a regression, accuracy for a classification. Asked before any data (a sweep's
        direction), the table is read to learn which (a file's target column decides under
        data.problem=auto); nothing is split, preprocessed or batched."""
        if info is None:
            regression = DATA.build(cfg.data, "tabular").problem == "regression"
        else:
            regression = info.target == "regression"
        return Objective("rmse", maximize=False) if regression else Objective("accuracy", True)

    def serving(self, cfg, model, data: Data) -> Served:
        """Raw columns -> {label, probability per class} or {prediction}, in the target's own
        values and units (as they are written in the data)."""
        import keras

        from dlrun.serving import class_outputs

        info, pre = data.info, data.preprocess
        out = keras.ops.cast(model(pre.output), "float32")  # mixed precision heads may be 16-bit
        if info.target == "regression":
            value = keras.layers.Rescaling(info.y_std, offset=info.y_mean, name="target_units")(out)
            outputs, columns = {"prediction": value}, {}
        else:
            outputs = class_outputs(out, info.class_values, binary=info.target == "binary")
            columns = {"probability": list(info.class_values)}
        from dlrun.data.preprocess import dict_inputs

        with dict_inputs():
            served = keras.Model(pre.input, outputs, name=f"served_{model.name}")
        return Served(served, example=data.examples["test"].inputs.head(5), output_columns=columns,
                      meta={"target": info.target_column})  # predict names its answers predicted_<target>

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A CSV with the training file's options; the target column is optional."""
        from dlrun.data.csv import FileOptions, read_csv

        if not source:
            raise DlrunError("no input file", "input=<rows.csv>")
        opts = FileOptions.of(cfg.data)
        header = bool(opts.header)
        frame = read_csv(source, sep=opts.sep, header=header, min_columns=1, encoding=opts.encoding)
        target = str(cfg.data.get("target")) if cfg.get("data") is not None and cfg.data.get("target") else None
        if target is None and served is not None:  # a generated data set's target (insurance: group)
            target = served.meta.get("target")
        if not header and served is not None:  # columns by position, as in training
            frame = _name_like_training(frame, served, target)
        if target is not None and target not in frame.columns:
            try:
                from dlrun.data.csv import column

                target = column(frame, target, source)
            except DlrunError:
                target = None
        truth = _as_text(frame[target]).to_numpy() if target is not None else None
        return Examples(frame, truth, frame, _stem(source), str(source))

    def score(self, cfg, served: Served, examples: Examples, names: list[str] | None = None) -> Report:
        """Test metrics of the served model; `names` shows classes by name instead of value."""
        from dlrun import metrics as scoring
        from dlrun.plots import confusion_matrix
        from dlrun.serving import class_answers, predict_frame

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}' has no target column '{cfg.data.get('target')}' to score against",
                             "use dlrun predict for files without answers")
        report = Report()
        if "probability" not in served.output_columns:  # regression: values in the target's units
            truth = np.asarray(examples.targets, dtype="float64")
            report.metrics.update(scoring.regression(truth, predict_frame(served, examples)["prediction"].to_numpy()))
            report.primary = "rmse"
            return report
        values_ = served.output_columns["probability"]
        truth, proba = class_answers(served, examples, what="target value")
        names = names if names and len(names) == len(values_) else values_
        values, rows, cm = scoring.classification(truth, proba.argmax(axis=1), names, proba)
        report.metrics.update(values)
        report.tables["classes"] = rows
        report.figures["confusion_matrix.png"] = confusion_matrix(cm, names)
        report.primary = "accuracy"
        return report

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun import metrics as scoring

        report = self.score(cfg, served, data.examples["test"], data.info.class_names).prefixed("test")
        info, a = data.info, data.arrays
        net = {k.split("/", 1)[1]: v for k, v in report.metrics.items()}
        rows = [{"model": f"{cfg.model.name} (network)", **_headline(net, info.target)}]
        on_val = {}
        for name, base in baselines(cfg, info, a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                                    a.get("x_val"), a.get("y_val")).items():
            on_val[name] = base.pop(VAL, None)
            report.metrics.update(scoring.prefixed(f"baseline/{name}", base))
            rows.append({"model": name, **_headline(base, info.target)})
        report.tables["comparison"] = rows
        if info.empty_cells:  # what the served model fills in (data.missing=impute), per column
            report.tables["empty_cells"] = info.empty_cells
            report.metrics.update({f"data/empty_cells/{scoring.safe_name(r['column'])}": float(r["empty"])
                                   for r in info.empty_cells})
        # never mislead: the network against the best baseline on the validation split
        if len(data.examples["val"].inputs):
            objective = self.objective(cfg, info)
            network = self.score(cfg, served, data.examples["val"], info.class_names).metrics[objective.name]
            line = scoring.losing_to_baseline(objective.name, objective.maximize, network, on_val,
                                        "a regularised network (model.dropout=0.2 or model.l2=0.001), or the "
                                        "baseline itself")
            report.warnings += [line] if line else []
        return report


def _as_text(col):
    """Target values as text, written as `_classes` writes them (3.0 -> '3')."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.map(lambda v: str(int(v)) if float(v).is_integer() else str(v))
    return col.astype(str)


def _classes(col) -> tuple[list[str], np.ndarray]:
    """(class values as text, in numeric order for numbers, and each row's class index)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values, y = np.unique(col.to_numpy(dtype="float64"), return_inverse=True)
        text = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
    else:
        values, y = np.unique(col.astype(str).to_numpy(), return_inverse=True)
        text = [str(v) for v in values]
    return text, y.astype("int32")


def _name_like_training(frame, served, target):
    """A header-less file: columns c0, c1, ... as in training; when it has exactly the model's
    feature count (no target column), name them after the model's inputs in order."""
    spec = served.model.input
    names = list(spec) if isinstance(spec, dict) else []
    if names and frame.shape[1] == len(names):
        frame.columns = names
    return frame


def _stem(source: str) -> str:
    from pathlib import Path

    return Path(str(source)).stem


def _headline(m: dict, target: str) -> dict:
    keys = ("mae", "rmse", "r2") if target == "regression" else ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    return {k: m[k] for k in keys if k in m}


_LAST_BASELINES: dict = {}  # inputs -> result of the last call: a sweep's jobs share data and split


VAL = "validation"  # the key of a baseline's validation score (accuracy or rmse) in its metrics


def baselines(cfg, info, x_train, y_train, x_test, y_test, x_val=None, y_val=None) -> dict[str, dict]:
    """Classic models on the same split: linear (logistic/linear regression), random forest.
    Their test metrics, plus their validation accuracy (rmse) under VAL when x_val has rows.

    They depend on the data, the split and their own settings only, so the jobs of a sweep in
    one process (which vary the network) reuse the first job's result instead of fitting a
    forest again each (seconds on a full table)."""
    import copy
    import hashlib

    digest = hashlib.blake2b()
    x_val, y_val = (x_val, y_val) if x_val is not None and len(x_val) else (x_train[:0], y_train[:0])
    for a in (x_train, y_train, x_test, y_test, x_val, y_val):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    key = (digest.hexdigest(), repr(list(cfg.task.get("baselines") or [])), cfg.task.get("forest_trees"),
           int(cfg.task.split.seed), info.target, repr(info.class_names))
    if key not in _LAST_BASELINES:
        result = _fit_baselines(cfg, info, x_train, y_train, x_test, y_test, x_val, y_val)
        _LAST_BASELINES.clear()
        _LAST_BASELINES[key] = result
    return copy.deepcopy(_LAST_BASELINES[key])


def _fit_baselines(cfg, info, x_train, y_train, x_test, y_test, x_val, y_val) -> dict[str, dict]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from dlrun import metrics as scoring

    seed = int(cfg.task.split.seed)
    regression = info.target == "regression"
    trees = int(cfg.task.forest_trees)
    makers = {
        "linear": (lambda: LinearRegression()) if regression else (lambda: LogisticRegression(max_iter=2000)),
        "random_forest": (lambda: RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=-1))
        if regression else (lambda: RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=-1)),
    }
    out = {}
    for name in cfg.task.get("baselines") or []:
        if name not in makers:
            raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(makers)}")
        if not regression and len(np.unique(y_train)) < 2:
            continue  # a tiny (smoke) subset with one class: nothing for a classifier to fit
        est = makers[name]().fit(x_train, y_train)
        pred = est.predict(x_test)
        if regression:
            out[name] = scoring.regression(y_test, pred)
        else:
            proba = est.predict_proba(x_test) if hasattr(est, "predict_proba") else None
            if proba is not None and proba.shape[1] != len(info.class_names):  # a class missing in train
                full = np.zeros((len(proba), len(info.class_names)))
                full[:, est.classes_] = proba
                proba = full
            out[name] = scoring.classification(y_test, pred, info.class_names, proba)[0]
        if len(x_val):
            v = est.predict(x_val)
            out[name][VAL] = scoring.regression(y_val, v)["rmse"] if regression else float(np.mean(v == y_val))
    return out

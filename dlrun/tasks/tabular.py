"""Tabular task: a feature table -> class or value, an MLP, and scikit-learn baselines.

Rows are split (stratified for classes, seeded) into train/validation/test; numeric columns
are standardised and text columns one-hot encoded with statistics from the training rows
only. The report has the network's test metrics, per-class precision/recall/F1 and a
confusion matrix, and the same metrics for a linear model and a random forest trained on the
same split ("baseline/*").
"""

from __future__ import annotations

import numpy as np

from dlrun.data.pipeline import split_indices
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Data, DataInfo, Report, Task


def encoder(frame, features: list[str], standardize: bool):
    """ColumnTransformer: numeric -> (standardised) numbers, text -> one-hot."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    text = [c for c in features if c not in numeric]
    parts = []
    if numeric:
        parts.append(("num", StandardScaler() if standardize else "passthrough", numeric))
    if text:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text))
    return ColumnTransformer(parts, sparse_threshold=0.0)


@TASKS.register("tabular", "Feature table -> class or value (MLP) with scikit-learn baselines")
class TabularTask(Task):
    name = "tabular"

    def data(self, cfg, batch_size: int) -> Data:
        from dlrun.data.pipeline import from_arrays, subset

        table = DATA.for_task(cfg.data.name, "tabular").obj(cfg.data)
        frame = table.frame
        features = [c for c in frame.columns if c != table.target]
        y_raw = frame[table.target]
        classification = table.problem == "classification"
        class_names = table.class_names
        if classification:
            import pandas as pd

            labels = y_raw.to_numpy() if pd.api.types.is_numeric_dtype(y_raw) else y_raw.astype(str).to_numpy()
            values, y = np.unique(labels, return_inverse=True)
            if len(values) < 2:
                raise DlrunError(f"target '{table.target}' has a single class", "nothing to learn")
            y = y.astype("int32")
            if class_names is None or len(class_names) != len(values):
                class_names = [str(v) for v in values]
        else:
            y = y_raw.to_numpy(dtype="float32")

        stratify = classification and bool(cfg.task.split.stratify)
        tr, va, te = split_indices(len(frame), y, cfg.task.split, stratify, table.test_rows)
        enc = encoder(frame, features, bool(cfg.data.get("standardize", True)))
        x_train = enc.fit_transform(frame.iloc[tr][features]).astype("float32")
        width = x_train.shape[1]
        x_all = {s: enc.transform(frame.iloc[i][features]).astype("float32") if len(i) else np.zeros((0, width), "float32")
                 for s, i in (("val", va), ("test", te))}
        arrays = {"x_train": x_train, "y_train": y[tr], "x_val": x_all["val"], "y_val": y[va],
                  "x_test": x_all["test"], "y_test": y[te]}
        if cfg.trainer.fast:
            for split in ("train", "val", "test"):
                small = subset({"x": arrays[f"x_{split}"], "y": arrays[f"y_{split}"]}, 64, int(cfg.trainer.seed))
                arrays[f"x_{split}"], arrays[f"y_{split}"] = small["x"], small["y"]

        y_mean, y_std = 0.0, 1.0
        if not classification:  # train on a standardised target; report in original units
            y_mean, y_std = float(arrays["y_train"].mean()), float(arrays["y_train"].std() or 1.0)
        scale = (lambda v: (v - y_mean) / y_std) if not classification else (lambda v: v)
        seed = int(cfg.trainer.seed)
        train = from_arrays(arrays["x_train"], scale(arrays["y_train"]), batch_size, shuffle=True, seed=seed)
        val = from_arrays(arrays["x_val"], scale(arrays["y_val"]), batch_size) if len(va) else None
        test = from_arrays(arrays["x_test"], scale(arrays["y_test"]), batch_size)

        n_classes = len(class_names) if classification else None
        target = ("binary" if n_classes == 2 else "multiclass") if classification else "regression"
        info = DataInfo(
            name=cfg.data.name, input_shape=(x_train.shape[1],), target=target, num_classes=n_classes,
            class_names=class_names, feature_names=[str(f) for f in enc.get_feature_names_out()],
            source=table.source, sizes={s: len(arrays[f"y_{s}"]) for s in ("train", "val", "test")},
            extra={"target_column": table.target, "y_mean": y_mean, "y_std": y_std},
        )
        return Data(train, val, test, info, arrays, frame=frame)

    def evaluate(self, cfg, model, data: Data) -> Report:
        from dlrun import metrics as M
        from dlrun.plots import confusion_matrix

        info, a = data.info, data.arrays
        x_test, y_test = a["x_test"], a["y_test"]
        out = model.predict(x_test, verbose=0, batch_size=1024)
        report = Report()
        if info.target == "regression":
            pred = out.reshape(-1) * info.extra["y_std"] + info.extra["y_mean"]
            net = M.regression(y_test, pred)
            report.primary = "test/rmse"
        else:
            proba = np.concatenate([1 - out, out], axis=1) if info.target == "binary" else out
            pred = proba.argmax(axis=1)
            net, rows, cm = M.classification(y_test, pred, info.class_names, proba)
            report.tables["classes"] = rows
            report.figures["confusion_matrix.png"] = confusion_matrix(cm, info.class_names)
            report.primary = "test/accuracy"
        report.metrics.update(M.prefixed("test", net))
        rows = [{"model": f"{cfg.model.name} (network)", **_headline(net, info.target)}]
        for name, base in baselines(cfg, info, a["x_train"], a["y_train"], x_test, y_test).items():
            report.metrics.update(M.prefixed(f"baseline/{name}", base))
            rows.append({"model": name, **_headline(base, info.target)})
        report.tables["comparison"] = rows
        return report


def _headline(m: dict, target: str) -> dict:
    keys = ("mae", "rmse", "r2") if target == "regression" else ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    return {k: m[k] for k in keys if k in m}


def baselines(cfg, info, x_train, y_train, x_test, y_test) -> dict[str, dict]:
    """Classic models on the same split: linear (logistic/linear regression), random forest."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from dlrun import metrics as M

    seed = int(cfg.task.split.seed)
    regression = info.target == "regression"
    makers = {
        "linear": (lambda: LinearRegression()) if regression else (lambda: LogisticRegression(max_iter=2000)),
        "random_forest": (lambda: RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=-1))
        if regression else (lambda: RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)),
    }
    out = {}
    for name in cfg.task.get("baselines") or []:
        if name not in makers:
            raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(makers)}")
        est = makers[name]().fit(x_train, y_train)
        pred = est.predict(x_test)
        if regression:
            out[name] = M.regression(y_test, pred)
        else:
            proba = est.predict_proba(x_test) if hasattr(est, "predict_proba") else None
            out[name] = M.classification(y_test, pred, info.class_names, proba)[0]
    return out

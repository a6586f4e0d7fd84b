"""Test-set metrics computed from predictions (scikit-learn does these well).

Each function returns (metrics dict with unprefixed names, table rows) so tasks can prefix
them ("test/", "baseline/<name>/") and hand them to the runner in a Report.
"""

from __future__ import annotations

import numpy as np


def classification(y_true, y_pred, class_names=None, proba=None) -> tuple[dict, list[dict], np.ndarray]:
    """Accuracy, macro precision/recall/F1, per-class rows and the confusion matrix.

    y_true/y_pred are integer labels; proba (n, classes) adds ROC AUC for two classes.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = np.asarray(y_true).astype(int).ravel()
    y_pred = np.asarray(y_pred).astype(int).ravel()
    n = len(class_names) if class_names else int(max(y_true.max(), y_pred.max()) + 1)
    labels = list(range(n))
    names = list(class_names) if class_names else [str(i) for i in labels]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(p)),
        "recall_macro": float(np.mean(r)),
        "f1_macro": float(np.mean(f)),
    }
    if proba is not None and n == 2 and len(np.unique(y_true)) == 2:
        proba = np.asarray(proba)
        score = proba[:, 1] if proba.ndim == 2 and proba.shape[1] == 2 else proba.ravel()
        metrics["roc_auc"] = float(roc_auc_score(y_true, score))
    rows = [
        {"class": names[i], "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i in labels
    ]
    for i in labels:
        metrics[f"f1/{_safe(names[i])}"] = float(f[i])
    return metrics, rows, confusion_matrix(y_true, y_pred, labels=labels)


def regression(y_true, y_pred) -> dict:
    """MAE, RMSE, R² and MAPE (percent; rows with a zero target are skipped)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true = np.asarray(y_true, dtype=float).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=float).reshape(len(y_pred), -1)
    nonzero = np.abs(y_true) > 1e-12
    mape = float(np.mean(np.abs((y_true[nonzero] - y_pred[nonzero]) / y_true[nonzero])) * 100) if nonzero.any() else float("nan")
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        "mape": mape,
    }


def losing_to_baseline(metric: str, maximize: bool, network: float | None, baselines: dict[str, float],
                       suggestion: str | None = None) -> str | None:
    """The warning line owed when the network does worse than the best baseline on the
    validation split (None when it does not, or when there is nothing to compare).

    metric: the compared metric's name; maximize: its direction; network: the network's value
    at the evaluated weights; baselines: baseline name -> value on the same split; suggestion:
    what to try instead (e.g. "model=bow"), task-specific.
    """
    import math

    scored = {k: float(v) for k, v in baselines.items() if v is not None and math.isfinite(float(v))}
    if network is None or not math.isfinite(float(network)) or not scored:
        return None
    name, best = (max if maximize else min)(scored.items(), key=lambda kv: kv[1])
    loses = float(network) < best if maximize else float(network) > best
    if not loses:
        return None
    line = (f"the network loses to the {name} baseline on the validation split: {metric} "
            f"{float(network):.4g} vs {best:.4g}")
    return f"{line}; try {suggestion}" if suggestion else line


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def _safe(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    import re

    return re.sub(r"[^0-9A-Za-z_\-. ]", "_", str(name))

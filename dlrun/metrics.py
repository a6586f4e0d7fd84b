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


safe_name = _safe  # for tasks naming metrics after a user's column


def pixel_confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n, n) pixel counts, rows true class, columns predicted, over masks of any shape.

    One bincount gives every segmentation number (IoU per class, Dice, pixel accuracy) for a
    whole set and for each image; keras.metrics.MeanIoU accumulates the same matrix (the tests
    check that the two agree) but lives in tensors and gives only the mean.
    """
    t = np.asarray(y_true, dtype="int64").ravel()
    p = np.asarray(y_pred, dtype="int64").ravel()
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of IoU = TP / (TP + FP + FN) over the classes that occur in the truth or the
    prediction (a class absent from both is left out, as keras.metrics.MeanIoU does)."""
    tp = np.diag(cm).astype("float64")
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else float("nan")

def object_iou(cm: np.ndarray) -> float:
    """IoU of the non-background pixels pooled over the object classes (class 0 is background):
    sum of their true positives over the sum of their unions; 1.0 when neither truth nor
    prediction has any object."""
    tp = np.diag(cm)[1:].sum()
    union = (cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm))[1:].sum()
    return float(tp / union) if union else 1.0


def segmentation(cm: np.ndarray, class_names) -> tuple[dict, list[dict]]:
    """Mean IoU, pixel accuracy, mean Dice and per-class IoU/Dice from a pixel confusion matrix.

    IoU_c = TP / (TP + FP + FN), Dice_c = 2 TP / (2 TP + FP + FN); means are over the classes
    that occur in the truth or the prediction. Rows: class, iou, dice, true and predicted pixels.
    """
    tp = np.diag(cm).astype("float64")
    true, pred = cm.sum(axis=1).astype("float64"), cm.sum(axis=0).astype("float64")
    union = true + pred - tp
    seen = union > 0
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=seen)
    dice = np.divide(2 * tp, true + pred, out=np.full_like(tp, np.nan), where=seen)
    metrics = {"mean_iou": mean_iou(cm),
               "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1)),
               "dice": float(np.mean(dice[seen])) if seen.any() else float("nan")}
    rows = []
    for i, name in enumerate(class_names):  # a class in neither truth nor prediction has no IoU
        if seen[i]:
            metrics[f"iou/{_safe(name)}"] = float(iou[i])
        rows.append({"class": str(name), "iou": float(iou[i]) if seen[i] else None,
                     "dice": float(dice[i]) if seen[i] else None,
                     "true_pixels": int(true[i]), "predicted_pixels": int(pred[i])})
    return metrics, rows

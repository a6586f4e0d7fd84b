"""Image classification (course Day 2): CNN, small ResNet or a keras.applications model on
digits (default, offline), synthetic shapes, MNIST/Fashion-MNIST/CIFAR, a folder or TFDS.

Data and pipeline live in dlrun/data/images.py, models in dlrun/models/image.py. The report has
accuracy, top-k accuracy (more than 5 classes), per-class precision/recall, the confusion
matrix and a grid of misclassified test images.
"""

from __future__ import annotations

from dlrun.registry import TASKS
from dlrun.tasks.base import Data, Report, Task


def predict(model, dataset, keep: int = 0):
    """Labels, class probabilities and up to `keep` misclassified images over a batched dataset."""
    import numpy as np

    labels, probas, wrong = [], [], []
    for x, y in dataset:
        p = np.asarray(model.predict_on_batch(x), dtype="float64")
        y = np.asarray(y).astype("int64").ravel()
        labels.append(y)
        probas.append(p)
        if len(wrong) < keep:
            bad = np.flatnonzero(p.argmax(axis=1) != y)[: keep - len(wrong)]
            x = np.asarray(x)
            wrong += [(x[i], y[i], int(p[i].argmax())) for i in bad]
    if not labels:
        return np.zeros(0, "int64"), np.zeros((0, 0)), []
    return np.concatenate(labels), np.concatenate(probas), wrong


def top_k_accuracy(y_true, proba, k: int) -> float:
    import numpy as np

    top = np.argsort(-proba, axis=1)[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1)))


@TASKS.register("image", "Image classification: CNN, ResNet or keras.applications on digits, shapes, "
                "MNIST, CIFAR, folders", aliases=("cnn",))
class ImageTask(Task):
    """Images -> class (softmax + sparse categorical cross-entropy)."""

    name = "image"

    def data(self, cfg, batch_size: int) -> Data:
        from dlrun.data.images import build_data

        return build_data(cfg, batch_size)

    def evaluate(self, cfg, model, data: Data) -> Report:
        import numpy as np

        from dlrun import metrics as M
        from dlrun import plots
        from dlrun.plots import images as image_plots

        keep = int(cfg.task.get("misclassified", 32))
        y_true, proba, wrong = predict(model, data.test, keep=keep)
        if len(y_true) == 0:
            return Report(metrics={}, primary="test/accuracy")
        names = data.info.class_names
        y_pred = proba.argmax(axis=1)
        values, rows, cm = M.classification(y_true, y_pred, names, proba=proba)
        values["loss"] = float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, 1.0))))
        k = int(cfg.task.get("top_k", 3))
        if (data.info.num_classes or 0) > 5:
            values[f"top{k}_accuracy"] = top_k_accuracy(y_true, proba, k)
        figures = {"confusion_matrix.png": plots.confusion_matrix(cm, names, title="Confusion matrix (test)")}
        if keep:
            figures["misclassified.png"] = image_plots.misclassified(
                [w[0] for w in wrong], [w[1] for w in wrong], [w[2] for w in wrong], names,
                total=int((y_pred != y_true).sum()))
        return Report(metrics=M.prefixed("test", values), tables={"per_class": rows}, figures=figures,
                      primary="test/accuracy")

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
    """Labels, class probabilities and up to `keep` misclassified images over a batched dataset.

    model.predict runs the whole split (it also distributes it under a tf.distribute strategy);
    the test split is unshuffled, so a second pass lines the labels and images up with it.
    """
    import numpy as np

    labels = [np.asarray(y).astype("int64").ravel() for _, y in dataset]
    if not labels:
        return np.zeros(0, "int64"), np.zeros((0, 0)), []
    y_true = np.concatenate(labels)
    proba = np.asarray(model.predict(dataset.map(lambda x, y: x), verbose=0), dtype="float64")
    wrong_idx = np.flatnonzero(proba.argmax(axis=1) != y_true)[:keep]
    wrong, start = [], 0
    for x, _ in dataset:
        if len(wrong) == len(wrong_idx):
            break
        x = np.asarray(x)
        wrong += [(x[i - start], int(y_true[i]), int(proba[i].argmax()))
                  for i in wrong_idx if start <= i < start + len(x)]
        start += len(x)
    return y_true, proba, wrong


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

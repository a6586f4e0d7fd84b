"""Image classification (course Day 2): CNN, small ResNet or a keras.applications model on
digits (default, offline), synthetic shapes, MNIST/Fashion-MNIST/CIFAR, a folder or TFDS.

Sources and pipeline helpers live in dlrun/data/images.py, models in dlrun/models/image.py.
Training feeds images already scaled to [0, 1] and resized; the served model takes raw pixel
values of any size (Resizing + Rescaling inside) and answers with the class name and the
probability of each class. The report has accuracy, top-k accuracy (more than 5 classes),
per-class precision/recall, the confusion matrix and a grid of misclassified test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import TASKS
from dlrun.tasks.base import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class ImageInfo(DataInfo):
    """DataInfo plus the raw pixel scale (raw * scale lies in [0, 1])."""

    scale: float = 1.0 / 255


def top_k_accuracy(y_true, proba, k: int) -> float:
    top = np.argsort(-proba, axis=1)[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1)))


@TASKS.register("image", "Image classification: CNN, ResNet or keras.applications on digits, shapes, "
                "MNIST, CIFAR, folders", aliases=("cnn",))
class ImageTask(Task):
    """Images -> class (softmax + sparse categorical cross-entropy)."""

    name = "image"

    def data(self, cfg, batch_size: int) -> Data:
        import tensorflow as tf

        from dlrun.data import images as image_data
        from dlrun.data.pipeline import fast_subset
        from dlrun.data.preprocess import images as image_preprocess

        task, seed = cfg.task, int(cfg.trainer.seed)
        src = image_data.load_images(cfg.data)
        size = image_data.image_size(cfg.data.get("image_size"))
        n_fast = int(cfg.trainer.fast_examples) if cfg.trainer.fast else None
        if len(src.class_names) < 2:
            raise DlrunError(f"data '{cfg.data.name}' has {len(src.class_names)} class(es): nothing to learn",
                             "an image folder needs one sub-folder per class, at least two")
        if src.arrays is not None:
            raw = image_data.split_arrays(src.arrays, task.split)
            if n_fast:
                for s in ("train", "val", "test"):
                    keep = fast_subset(np.arange(len(raw[f"y_{s}"])), n_fast, seed)
                    raw[f"x_{s}"], raw[f"y_{s}"] = raw[f"x_{s}"][keep], raw[f"y_{s}"][keep]
            arrays = {}
            for s in ("train", "val", "test"):
                arrays[f"x_{s}"] = image_data.to_model_input(raw[f"x_{s}"], src.scale, size)
                arrays[f"y_{s}"] = raw[f"y_{s}"]
            splits = {s: tf.data.Dataset.from_tensor_slices((arrays[f"x_{s}"], arrays[f"y_{s}"]))
                      for s in ("train", "val", "test")}
            sizes = {s: len(arrays[f"y_{s}"]) for s in ("train", "val", "test")}
            test_inputs, test_labels, scale = raw["x_test"], raw["y_test"], src.scale
        else:  # tf.data sources (folder, tfds) yield images in [0, 1] at their final size
            splits, sizes, arrays = dict(src.datasets), dict(src.sizes), {}
            if n_fast:
                splits = {s: ds.take(n_fast) for s, ds in splits.items()}
                sizes = {s: min(n, n_fast) for s, n in sizes.items()}
            scale = 1.0 / 255
            test_inputs = splits["test"].map(lambda x, y: x * 255.0)
            test_labels = np.asarray([int(y) for _, y in splits["test"]], dtype="int64")
        input_shape = tuple(int(d) for d in splits["train"].element_spec[0].shape)
        augment = image_data.augmentation(task.get("augment"), seed)
        cache = cfg.data.get("cache", True)

        def split_cache(split: str):  # a cache file per split: TF reuses an existing file as is
            return cache if cache in (True, False, None) else f"{cache}.{split}"

        train = image_data.pipeline(splits["train"], batch_size, training=True, seed=seed, augment=augment,
                                    cache=split_cache("train"), shuffle_buffer=int(task.get("shuffle_buffer", 10_000)))
        val = image_data.pipeline(splits["val"], batch_size, cache=split_cache("val")) if sizes.get("val") else None
        test = image_data.pipeline(splits["test"], batch_size, cache=split_cache("test"))
        names = list(src.class_names)
        name = Path(src.source).name if cfg.data.name == "folder" else str(cfg.data.name)
        info = ImageInfo(name=name, input_shape=input_shape, target="multiclass", num_classes=len(names),
                         class_names=names, source=src.source, sizes=sizes, scale=float(scale))
        truth = np.asarray([names[int(k)] for k in test_labels], dtype=object)
        examples = {"test": Examples(test_inputs, truth, None, name, src.source)}
        records = [DatasetRecord(name, src.source, context,
                                 _label_frame(arrays.get(f"y_{s}"), names) if arrays else None, "label")
                   for s, context in (("train", "training"), ("val", "validation"), ("test", "testing"))]
        records = [r if r.frame is not None else DatasetRecord(name, src.source, r.context,
                                                                _count_frame(sizes, r.context)) for r in records]
        pre = image_preprocess(input_shape[-1], scale, input_shape[:2])
        return Data(info, train, val, test, arrays=arrays, examples=examples, records=records, preprocess=pre,
                    warnings=list(src.warnings))

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("accuracy", maximize=True)

    def serving(self, cfg, model, data: Data) -> Served:
        """Raw pixels of any size -> {label, probability per class}."""
        import keras

        from dlrun.serving import class_outputs
        from dlrun.training.adversarial import plain

        pre, names = data.preprocess, list(data.info.class_names)
        served = keras.Model(pre.input, class_outputs(plain(model)(pre.output), names), name=f"served_{model.name}")
        example = data.examples["test"].inputs
        example = next(iter(example.batch(4))).numpy() if hasattr(example, "batch") else np.asarray(example[:4])
        info = data.info
        meta = {"scale": info.scale, "size": list(info.input_shape[:2]), "channels": int(info.input_shape[-1])}
        return Served(served, example=example.astype("float32"), output_columns={"probability": names}, meta=meta)

    def lens(self, cfg, served: Served):
        """The classifier inside the served model (dlrun explain, dlrun attack)."""
        from dlrun.explain.lens import Lens

        return Lens(served)

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """An image file, or a folder of them (recursively); files inside a sub-folder named after
        a class carry that class as their true label."""
        import tensorflow as tf

        from dlrun.data.images import image_files

        if not source:
            raise DlrunError("no input", "input=<image file or folder>")
        path = Path(source)
        files = image_files(source, IMAGE_SUFFIXES)
        meta = served.meta if served is not None else {}
        channels, scale = int(meta.get("channels", 3)), float(meta.get("scale", 1 / 255))
        size = tuple(meta.get("size") or ())
        out = []
        for f in files:
            try:
                data = tf.io.read_file(str(f))
                img = tf.io.decode_image(data, channels=channels, expand_animations=False)
            except tf.errors.OpError as e:
                raise DlrunError(f"{f}: not a readable image ({str(e).splitlines()[0][:120]})") from None
            img = tf.cast(img, tf.float32)
            if size:
                img = tf.image.resize(img, size)
            out.append(img.numpy() / 255.0 / scale)  # the source's own raw pixel range
        classes = set(served.output_columns.get("probability", [])) if served is not None else set()
        truth = [f.parent.name for f in files]
        import pandas as pd

        rows = pd.DataFrame({"file": [str(f) for f in files]})
        targets = np.asarray(truth, dtype=object) if classes and all(t in classes for t in truth) else None
        return Examples(np.stack(out).astype("float32"), targets, rows, path.stem or path.name, str(path.resolve()))

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        return self._score(cfg, served, examples)[0]

    def _score(self, cfg, served: Served, examples: Examples):
        from dlrun import metrics as scoring
        from dlrun import plots
        from dlrun.serving import class_answers

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}': no true classes to score against",
                             "put the images in sub-folders named after their classes, or use dlrun predict")
        names = list(served.output_columns["probability"])
        y_true, proba = class_answers(served, examples)
        y_pred = proba.argmax(axis=1)
        values, rows, cm = scoring.classification(y_true, y_pred, names, proba=proba)
        values["loss"] = float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, 1.0))))
        k = int(cfg.task.top_k)
        if len(names) > 5:
            values[f"top{k}_accuracy"] = top_k_accuracy(y_true, proba, k)
        figures = {"confusion_matrix.png": plots.confusion_matrix(cm, names, title="Confusion matrix (test)")}
        return Report(metrics=values, tables={"per_class": rows}, figures=figures, primary="accuracy"), y_true, y_pred

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun.plots import images as image_plots

        examples = data.examples["test"]
        report, y_true, y_pred = self._score(cfg, served, examples)
        keep = int(cfg.task.misclassified)
        wrong = np.flatnonzero(y_pred != y_true)
        if keep and len(wrong):
            shown = wrong[:keep]
            pictures = _pick(examples.inputs, shown) * data.info.scale
            names = data.info.class_names
            report.figures["misclassified.png"] = image_plots.misclassified(
                list(pictures), list(y_true[shown]), list(y_pred[shown]), names, total=len(wrong))
        return report.prefixed("test")


def _pick(inputs, indices) -> np.ndarray:
    """Images at `indices` of an array or an unbatched tf.data.Dataset of images."""
    if not hasattr(inputs, "batch"):
        return np.asarray(inputs)[indices]
    wanted, out = set(int(i) for i in indices), {}
    for i, x in enumerate(inputs):
        if i in wanted:
            out[i] = x.numpy()
        if len(out) == len(wanted):
            break
    return np.stack([out[int(i)] for i in indices])


def _label_frame(y, names):
    import pandas as pd

    return None if y is None else pd.DataFrame({"label": [names[int(k)] for k in y]})


def _count_frame(sizes: dict, context: str):
    """A folder or TFDS split is logged by its size (its files stay where they are)."""
    import pandas as pd

    split = {"training": "train", "validation": "val", "testing": "test"}[context]
    return pd.DataFrame({"split": [split], "images": [int(sizes.get(split, 0))]})

"""Object detection with an SSD (course "Detection") and COCO-style evaluation.

Data (dlrun/data/detection.py): generated shapes (default, offline), COCO JSON, VOC XML / CSV.
Model (dlrun/models/ssd.py): small CNN backbone with multi-scale heads over default boxes.
Training is Keras' fit on an `SSD` model (dlrun/models/ssd.py) whose compute_loss is the SSD
loss: matching happens in the tf.data pipeline, the step minimises (L_conf + alpha L_loc) / N
with hard negative mining, and after every epoch the validation mAP (pycocotools) joins the
epoch logs as val_map, val_map50, val_map75, so the run's checkpoint, early stopping, LR on
plateau and pruning follow it (the evaluated checkpoint is the best-mAP one). The served model takes raw images
(uint8 values, any size) and answers with boxes in the image's own pixels, classes and scores
after decoding and per-class NMS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import TASKS
from dlrun.tasks.base import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class DetectionInfo(DataInfo):
    """DataInfo plus the default-box layout (scales and aspect ratios, from the config or k-means)."""

    scales: list[float] = field(default_factory=list)
    aspect_ratios: list[float] = field(default_factory=list)
    max_boxes: int = 16


def _anchors(cfg, info):
    from dlrun.detection.boxes import default_boxes
    from dlrun.models.ssd import layout

    return default_boxes(*layout(cfg.model, info))


@TASKS.register("detection", "Object detection: SSD on generated shapes, COCO or VOC files; COCO mAP")
class DetectionTask(Task):
    name = "detection"

    # -- data ---------------------------------------------------------------------------------
    def data(self, cfg, batch_size: int) -> Data:
        from dlrun.data import detection as detection_data
        from dlrun.data.pipeline import fast_subset
        from dlrun.detection import pipeline as ssd_data
        from dlrun.registry import DATA

        seed = int(cfg.trainer.seed)
        data_cfg = cfg.data
        if cfg.trainer.fast and "n_train" in data_cfg:  # generated data: make only what a smoke run uses
            from omegaconf import OmegaConf

            data_cfg = OmegaConf.merge(data_cfg, {f"n_{s}": min(int(data_cfg[f"n_{s}"]), int(cfg.trainer.fast_examples))
                                                  for s in ("train", "val", "test")})
        src = DATA.build(data_cfg, "detection")
        split = detection_data.split_indices(src, float(cfg.task.split.val_size), float(cfg.task.split.test_size),
                                int(cfg.task.split.seed))
        if cfg.trainer.fast:
            n = int(cfg.trainer.fast_examples)
            split = {s: fast_subset(idx, n, seed) for s, idx in split.items()}
        size = int(cfg.model.image_size)
        max_boxes = int(cfg.model.max_boxes)
        warnings = list(src.warnings)
        arrays = {}
        for s, idx in split.items():
            x, b, lab = ssd_data.model_arrays(src, idx, size, max_boxes, warnings if s == "train" else None)
            arrays[f"x_{s}"], arrays[f"boxes_{s}"], arrays[f"labels_{s}"] = x, b, lab
        names = list(src.class_names)
        info = DetectionInfo(name=str(cfg.data.name), input_shape=(size, size, 3), target="detection",
                             num_classes=len(names), class_names=names, source=src.source,
                             sizes={s: len(i) for s, i in split.items()}, max_boxes=max_boxes)
        if str(cfg.model.get("anchors", "config")) == "auto":
            from dlrun.detection.boxes import kmeans_anchors
            from dlrun.models.ssd import feature_sizes

            b, lab = arrays["boxes_train"], arrays["labels_train"]
            wh = (b[..., 2:] - b[..., :2])[lab >= 0]
            try:
                info.scales, info.aspect_ratios = kmeans_anchors(
                    wh, len(feature_sizes(cfg.model, size)), len(cfg.model.aspect_ratios), seed)
            except ValueError as e:
                raise DlrunError(str(e)) from None
        elif str(cfg.model.get("anchors", "config")) != "config":
            raise DlrunError(f"model.anchors: unknown value '{cfg.model.anchors}'", "valid: config, auto")
        anchors = _anchors(cfg, info)
        pos, neg = float(cfg.task.match.positive_iou), float(cfg.task.match.negative_iou)
        if not 0 < neg <= pos <= 1:
            raise DlrunError(f"task.match: need 0 < negative_iou <= positive_iou <= 1, got {neg}, {pos}")
        augment = ssd_data.augmenter(cfg.task.get("augment"), seed)
        train = ssd_data.pipeline(arrays["x_train"], arrays["boxes_train"], arrays["labels_train"], anchors, batch_size,
                                  pos, neg, training=True, seed=seed, augment=augment)
        val = ssd_data.pipeline(arrays["x_val"], arrays["boxes_val"], arrays["labels_val"], anchors, batch_size, pos, neg)
        test = ssd_data.pipeline(arrays["x_test"], arrays["boxes_test"], arrays["labels_test"], anchors, batch_size,
                                 pos, neg)
        examples = {s: _examples(src, split[s], names, str(cfg.data.name)) for s in ("val", "test")}
        records = [DatasetRecord(info.name, src.source, context, _box_frame(src, split[s], names))
                   for s, context in (("train", "training"), ("val", "validation"), ("test", "testing"))]
        return Data(info, train, val, test, arrays=arrays, examples=examples, records=records, warnings=warnings)

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        name = str(cfg.task.objective)
        if name not in ("map", "map50", "map75"):
            raise DlrunError(f"task.objective: unknown value '{name}'", "valid: map, map50, map75")
        return Objective(name, maximize=True)

    def build_model(self, cfg, info: DataInfo):
        import keras

        from dlrun.models import build_model
        from dlrun.models.ssd import ssd_class
        from dlrun.training.compile import make_optimizer

        network = build_model(cfg.model, info, task=self.name)
        loss = cfg.task.loss
        model = ssd_class()(network, float(loss.neg_pos_ratio), float(loss.alpha), name="ssd_trainer")
        model(keras.ops.zeros((1, *info.input_shape)))  # build
        trainer = cfg.trainer
        model.compile(optimizer=make_optimizer(trainer, info.steps_per_epoch), jit_compile=bool(trainer.jit_compile),
                      steps_per_execution=int(trainer.steps_per_execution))
        return model

    # -- training -----------------------------------------------------------------------------
    def fit(self, cfg, model, data: Data, run):
        from dlrun.training.callbacks import epoch_metrics
        from dlrun.training.handle import keras_fit

        info = data.info
        detector = _detector(cfg, info)
        truth = _truths_from_arrays(data.arrays, "val", info.input_shape[:2])

        def val_map(model):
            metrics, _, _ = _coco(_predict_arrays(model, detector, data.arrays["x_val"]), truth, info.class_names)
            return {f"val_{k}": metrics[k] for k in ("map", "map50", "map75")}

        return keras_fit(cfg, model, data, run, first=(epoch_metrics(val_map),) if data.val is not None else ())

    # -- serving ------------------------------------------------------------------------------
    def serving(self, cfg, model, data: Data) -> Served:
        import keras

        from dlrun.detection.serve import Detect

        info = data.info
        size = int(info.input_shape[0])
        image = keras.Input(shape=(None, None, 3), name="image")
        # pixels in and boxes out in float32 whatever trainer.precision computes the network in
        x = keras.layers.Resizing(size, size, name="resize", dtype="float32")(image)
        x = keras.layers.Rescaling(1.0 / 255, name="scale", dtype="float32")(x)
        raw = model.network(x)
        t = cfg.task.inference
        from dlrun.models.ssd import layout

        sizes, scales, ratios = layout(cfg.model, info)
        boxes, scores, classes, count = Detect(
            sizes, scales, ratios, float(t.score_threshold), float(t.iou_threshold), int(t.max_detections),
            name="detect", dtype="float32")([raw, image])
        served = keras.Model(image, {"boxes": boxes, "scores": scores, "classes": classes, "count": count},
                             name="served_ssd")
        example = np.stack(data.examples["test"].inputs[:2]).astype("float32") \
            if len({im.shape for im in data.examples["test"].inputs[:2]}) == 1 \
            else data.examples["test"].inputs[0][None].astype("float32")
        return Served(served, example=example, meta={"class_names": list(info.class_names), "size": size})

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        report = self._score(cfg, served, data.examples["test"], grid=int(cfg.task.grid))
        report.metrics.update(_speed(served, data.examples["test"].inputs))
        out = report.prefixed("test")
        out.metrics.update(self._untrained_baseline(cfg, data))
        return out

    def _untrained_baseline(self, cfg, data: Data) -> dict:
        """The same network before training with the same decoding (a fresh one from the run's
        seed, so `dlrun eval` gets it too): the floor that shows what training bought."""
        import keras

        from dlrun.models import build_model

        keras.utils.set_random_seed(int(cfg.trainer.seed))
        untrained = build_model(cfg.model, data.info, task=self.name)
        truth = _truths_from_arrays(data.arrays, "test", data.info.input_shape[:2])
        base, _, _ = _coco(_predict_arrays(untrained, _detector(cfg, data.info), data.arrays["x_test"]), truth,
                           data.info.class_names)
        return {f"baseline/untrained_ssd/{k}": base[k] for k in ("map", "map50")}

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        return self._score(cfg, served, examples, grid=0)

    def _score(self, cfg, served: Served, examples: Examples, grid: int) -> Report:
        from dlrun.detection.coco import pr_curves

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}': no true boxes to score against", "use dlrun predict")
        names = list(served.meta.get("class_names") or [])
        preds = detect_images(served, examples.inputs)
        metrics, rows, ev = _coco(preds, examples.targets, names)
        report = Report(metrics=metrics, tables={"per_class": rows}, primary=str(cfg.task.objective))
        from dlrun.detection import plots as detection_plots

        curves = pr_curves(ev, names)
        if curves:
            report.figures["pr_curves.png"] = detection_plots.pr_curves(curves)
        if grid:
            report.figures["detections.png"] = detection_plots.detections_grid(examples.inputs[:grid], preds[:grid],
                                                                 examples.targets[:grid], names)
        return report

    # -- user files ---------------------------------------------------------------------------
    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """An image file or a folder of images (recursively; no true boxes: predict), or annotated
        images to score: a COCO JSON (images beside it), a VOC CSV, or a folder of VOC XML files."""
        from dlrun.data.detection import read_image
        from dlrun.data.images import image_files

        if not source:
            raise DlrunError("no input", "input=<image file or folder>")
        path = Path(source)
        if path.suffix.lower() in (".json", ".csv") or (path.is_dir() and any(path.glob("*.xml"))):
            return _read_annotated(cfg, path, served)
        files = image_files(source, IMAGE_SUFFIXES)
        images = [read_image(f) for f in files]
        # rows stay None: predictions have one row per box, not per image, and name their file
        ex = Examples(images, None, None, path.stem or path.name, str(path.resolve()))
        ex.files = [str(f) for f in files]
        return ex

    def predict(self, cfg, served: Served, examples: Examples):
        """One row per detected box: file, class, score, xmin, ymin, xmax, ymax (image pixels);
        and, unless annotate=false, a PNG per image with its boxes (score >= min_score, default
        0.3) in <output stem>_annotated/ beside the CSV."""
        import pandas as pd

        files = getattr(examples, "files", None) or [f"image_{i}" for i in range(len(examples))]
        names = list(served.meta.get("class_names") or [])
        rows = []
        for f, p in zip(files, detect_images(served, examples.inputs), strict=False):
            for box, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=False):
                rows.append({"file": f, "class": names[int(label)] if int(label) < len(names) else str(label),
                             "score": round(float(score), 4),
                             **{k: round(float(v), 1) for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=False)}})
        frame = pd.DataFrame(rows, columns=["file", "class", "score", "xmin", "ymin", "xmax", "ymax"])
        options = cfg.get("predict") or {}
        if str(options.get("annotate", "true")).lower() not in ("false", "0", "no"):
            out = Path(str(options.get("output") or "predictions.csv"))
            _annotate(examples.inputs, files, frame, out.with_name(out.stem + "_annotated"),
                      float(options.get("min_score", 0.3)))
        return frame


# -- helpers ------------------------------------------------------------------------------------


def _detector(cfg, info):
    """A compiled function: model outputs (B, A, 4 + C + 1) -> decoded, NMS'd boxes (relative)."""
    import tensorflow as tf

    from dlrun.detection.boxes import detect

    anchors = tf.constant(_anchors(cfg, info))
    t = cfg.task.inference

    @tf.function
    def run(out):
        return detect(anchors, out[..., :4], out[..., 4:], float(t.score_threshold), float(t.iou_threshold),
                      int(t.max_detections), int(t.max_detections))

    return run


def _predict_arrays(model, detector, x, batch: int = 64):
    """Detections on model-size images in [0, 1], boxes in model-input pixels (Keras' predict:
    distributed under the model's strategy)."""
    side = x.shape[1]
    raw = model.predict(x, batch_size=batch, verbose=0)
    out = []
    for i in range(0, len(x), batch):
        boxes, scores, classes, count = (v.numpy() for v in detector(raw[i:i + batch]))
        for b, s, c, n in zip(boxes, scores, classes, count, strict=False):
            out.append({"boxes": b[:n] * side, "scores": s[:n], "labels": c[:n]})
    return out


def _truths_from_arrays(arrays, split: str, hw):
    h, w = hw
    out = []
    for b, lab in zip(arrays[f"boxes_{split}"], arrays[f"labels_{split}"], strict=False):
        keep = lab >= 0
        out.append({"boxes": b[keep] * [w, h, w, h], "labels": lab[keep], "width": w, "height": h})
    return out


def _coco(preds, truths, names):
    from dlrun.detection.coco import evaluate

    return evaluate(truths, preds, names)


def detect_images(served: Served, images, batch: int = 32):
    """The served model on a list of uint8 images of any sizes (same-size runs batched):
    per image dict(boxes pixel xyxy, scores, labels)."""
    from dlrun.data.images import same_size_batches

    out = [None] * len(images)
    for group in same_size_batches(images, batch):
        res = served.model(np.stack([images[j] for j in group]).astype("float32"), training=False)
        boxes, scores, classes, count = (np.asarray(res[k]) for k in ("boxes", "scores", "classes", "count"))
        for row, j in enumerate(group):
            n = int(count[row])
            out[j] = {"boxes": boxes[row, :n], "scores": scores[row, :n], "labels": classes[row, :n]}
    return out


def _read_annotated(cfg, path: Path, served: Served | None) -> Examples:
    """Annotated images (COCO JSON / VOC CSV / VOC XML folder) as Examples with true boxes,
    their class names mapped onto the served model's classes."""
    from omegaconf import OmegaConf

    from dlrun.data import detection as detection_data
    from dlrun.data.csv import FileOptions

    if not path.exists():
        raise DlrunError(f"input '{path}' does not exist")
    policy = {"on_bad_box": str(FileOptions.of(cfg.get("data")).on_bad_box)}
    if path.suffix.lower() == ".json":
        src = detection_data.load_coco(OmegaConf.create({"name": "coco", "annotations": str(path), "images": str(path.parent),
                                                         **policy}))
    else:
        src = detection_data.load_voc(OmegaConf.create({"name": "voc", "path": str(path), "images": None, "classes": None,
                                                        **policy}))
    names = list((served.meta.get("class_names") if served is not None else None) or src.class_names)
    unknown = sorted(set(src.class_names) - set(names))
    if unknown:
        raise DlrunError(f"{path}: class(es) {', '.join(unknown)} unknown to the model",
                         f"the model knows {', '.join(names)}")
    remap = np.asarray([names.index(n) for n in src.class_names], dtype="int64")
    src.labels = [remap[np.asarray(lab, dtype="int64")] if len(lab) else lab for lab in src.labels]
    ex = _examples(src, np.arange(len(src.images)), names, path.stem)
    ex.source = str(path.resolve())
    return ex


def _annotate(images, files, frame, folder: Path, min_score: float) -> None:
    """One PNG per input image with its boxes >= min_score drawn (tf.image.draw_bounding_boxes)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    for img, f in zip(images, files, strict=False):
        h, w = img.shape[:2]
        rows = frame[(frame["file"] == f) & (frame["score"] >= min_score)]
        boxes = rows[["ymin", "xmin", "ymax", "xmax"]].to_numpy("float32") / np.array([h, w, h, w], "float32")
        drawn = tf.image.draw_bounding_boxes(tf.cast(img[None], tf.float32) / 255.0, boxes[None],
                                             np.array([[1.0, 0.0, 0.0, 1.0]], "float32"))[0]
        png = tf.io.encode_png(tf.cast(tf.clip_by_value(drawn, 0, 1) * 255, tf.uint8))
        tf.io.write_file(str(folder / (Path(f).stem + ".png")), png)


def _speed(served: Served, images) -> dict:
    """Images per second of the served model (decode + NMS included) at batch 1 and batch 32."""
    import tensorflow as tf

    if not images:
        return {}
    img = np.asarray(images[0], dtype="float32")
    fn = tf.function(lambda x: served.model(x, training=False))
    out = {}
    for bs, reps in ((1, 20), (32, 3)):
        x = tf.constant(np.repeat(img[None], bs, axis=0))
        fn(x)  # trace
        start = time.perf_counter()
        for _ in range(reps):
            fn(x)["count"].numpy()
        out[f"images_per_second_batch{bs}"] = bs * reps / (time.perf_counter() - start)
    return out


def _examples(src, indices, names, name: str) -> Examples:
    images = [src.images[i] for i in indices]
    targets = [{"boxes": np.asarray(src.boxes[i]).reshape(-1, 4), "labels": np.asarray(src.labels[i]),
                "width": src.images[i].shape[1], "height": src.images[i].shape[0]} for i in indices]
    ex = Examples(images, targets, None, name, src.source)
    ex.files = [src.files[i] for i in indices] if src.files else [f"{name}_{i}" for i in indices]
    return ex


def _box_frame(src, indices, names):
    import pandas as pd

    rows = []
    for i in indices:
        f = src.files[i] if src.files else f"image_{i}"
        for b, lab in zip(np.asarray(src.boxes[i]).reshape(-1, 4), src.labels[i], strict=False):
            rows.append({"file": f, "class": names[int(lab)], "xmin": float(b[0]), "ymin": float(b[1]),
                         "xmax": float(b[2]), "ymax": float(b[3])})
    return pd.DataFrame(rows, columns=["file", "class", "xmin", "ymin", "xmax", "ymax"])

"""Semantic segmentation (course "Segmentation"): a class for every pixel, with an FCN or a U-Net.

Data (dlrun/data/masks.py): generated shapes scenes with exact masks (default, offline), a
folder of images/ and masks/, or a TFDS set. Models (dlrun/models/segmentation.py): `fcn`
(32s/16s/8s skip fusion) and `unet`. Training is Keras fit with pixel-wise sparse categorical
cross-entropy; Keras' MeanIoU is the per-epoch metric and the objective (val_mean_iou picks the
best checkpoint). Augmentation moves image and mask together.

The served model takes raw images of any size (pixel values 0..255) and answers with the mask
(class index per pixel) and the class probabilities per pixel at the input's own size. The test
report, `dlrun eval` and `Task.score` all run that model on each image at its own size and count
pixels: mean IoU (primary), per-class IoU and Dice, pixel accuracy; beside two baselines fitted
on the training masks (every pixel the majority class; at each pixel position the class most
frequent there). Figures: test images with their true and predicted masks, and the worst ones
by IoU. `dlrun predict` writes a mask PNG (palette PNG of class indices) and an overlay PNG per
image.

Examples (what `read` returns, what `score` and `predict` take): inputs are float32 raw pixel
values, one (N, H, W, C) array when all images share a size, else a list of (H, W, C) arrays;
targets the masks in the same form ((N, H, W) or a list of (H, W) integer arrays), or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import TASKS
from dlrun.tasks.base import Task

SPLITS = ("train", "val", "test")


@dataclass
class SegmentationInfo(DataInfo):
    """DataInfo plus the raw pixel scale (raw * scale lies in [0, 1])."""

    scale: float = 1.0 / 255


@TASKS.register("segmentation", "Semantic segmentation: FCN (32s/16s/8s) or U-Net on generated shapes, "
                "mask folders or TFDS; mean IoU")
class SegmentationTask(Task):
    """Images -> a class per pixel (softmax per pixel + sparse categorical cross-entropy)."""

    name = "segmentation"

    # -- data ---------------------------------------------------------------------------------
    def data(self, cfg, batch_size: int) -> Data:
        import tensorflow as tf
        from omegaconf import OmegaConf

        from dlrun.data import images as image_data
        from dlrun.data import masks as mask_data
        from dlrun.data.detection import split_indices
        from dlrun.data.pipeline import fast_subset
        from dlrun.registry import DATA

        seed, data_cfg = int(cfg.trainer.seed), cfg.data
        n_fast = int(cfg.trainer.fast_examples) if cfg.trainer.fast else None
        if n_fast and "n_train" in data_cfg:  # generated data: make only what a smoke run uses
            data_cfg = OmegaConf.merge(data_cfg, {f"n_{s}": min(int(data_cfg[f"n_{s}"]), n_fast) for s in SPLITS})
        src = DATA.build(data_cfg, "segmentation")
        split = split_indices(src, float(cfg.task.split.val_size), float(cfg.task.split.test_size),
                              int(cfg.task.split.seed))
        if n_fast:
            split = {s: fast_subset(idx, n_fast, seed) for s, idx in split.items()}
        names = list(src.class_names)
        if len(names) < 2:
            raise DlrunError(f"data '{cfg.data.name}' has {len(names)} class(es): nothing to segment")
        size = mask_data._size(cfg.data.image_size)
        arrays = {}
        for s, idx in split.items():
            arrays[f"x_{s}"], arrays[f"y_{s}"] = model_arrays([src.images[i] for i in idx],
                                                              [src.masks[i] for i in idx], size)
        augment = mask_data.augmenter(cfg.task.get("augment"), seed)
        buffer = int(cfg.task.shuffle_buffer)

        def split_ds(s: str, training: bool = False):
            ds = tf.data.Dataset.from_tensor_slices((arrays[f"x_{s}"], arrays[f"y_{s}"]))
            return image_data.pipeline(ds, batch_size, training=training, seed=seed, augment=augment, cache=False,
                                       shuffle_buffer=buffer, pairs=True)

        channels = int(arrays["x_train"].shape[-1])
        name = Path(src.source).name if cfg.data.name == "mask_folder" else str(cfg.data.name)
        info = SegmentationInfo(name=name, input_shape=(*size, channels), target="segmentation",
                                num_classes=len(names), class_names=names, source=src.source,
                                sizes={s: len(idx) for s, idx in split.items()})
        examples = {s: _examples(src, split[s], name) for s in ("val", "test")}
        records = [DatasetRecord(name, src.source, context, _mask_frame(src, split[s], names))
                   for s, context in (("train", "training"), ("val", "validation"), ("test", "testing"))]
        return Data(info, split_ds("train", True), split_ds("val") if len(split["val"]) else None, split_ds("test"),
                    arrays=arrays, examples=examples, records=records, warnings=list(src.warnings))

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("mean_iou", maximize=True)

    def build_model(self, cfg, info: DataInfo):
        import keras

        from dlrun.models import build_model
        from dlrun.training.adversarial import wrap
        from dlrun.training.compile import compile_model

        model = wrap(build_model(cfg.model, info, task=self.name), cfg)  # task.adversarial, where set
        metrics = [keras.metrics.MeanIoU(num_classes=int(info.num_classes), sparse_y_pred=False, name="mean_iou"),
                   keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")]
        compile_model(model, cfg, info, loss="sparse_categorical_crossentropy", metrics=metrics)
        return model

    # -- serving ------------------------------------------------------------------------------
    def serving(self, cfg, model, data: Data) -> Served:
        """Raw pixels of any size -> {mask (B, H, W) class indices, probability (B, H, W, classes)}
        at the input's own height and width."""
        import keras

        from dlrun.models._segmentation_layers import ResizeLike
        from dlrun.training.adversarial import plain

        model, info = plain(model), data.info
        h, w, c = (int(d) for d in info.input_shape)
        image = keras.Input(shape=(None, None, c), name="image")
        x = keras.layers.Resizing(h, w, name="resize")(image)
        x = keras.layers.Rescaling(info.scale, name="scale")(x)
        proba = ResizeLike(name="to_input_size")(model(x), image)
        mask = keras.ops.cast(keras.ops.argmax(proba, axis=-1), "int32")
        served = keras.Model(image, {"mask": mask, "probability": proba}, name=f"served_{model.name}")
        test = data.examples["test"].inputs
        example = np.stack(test[:2]) if len({np.shape(t) for t in test[:2]}) == 1 else np.asarray(test[0])[None]
        names = list(info.class_names)
        meta = {"scale": info.scale, "size": [h, w], "channels": c, "class_names": names}
        return Served(served, example=example.astype("float32"), output_columns={"probability": names}, meta=meta)

    def lens(self, cfg, served: Served):
        """The network inside the served model, pixel by pixel (dlrun explain, dlrun attack)."""
        from dlrun.tasks._segmentation_lens import SegmentationLens

        return SegmentationLens(served)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun import metrics as scoring
        from dlrun.plots.masks import mask_grid

        names = list(data.info.class_names)
        test = data.examples["test"]
        report, preds, per = self._score(served, test)
        shown = int(cfg.task.figures)
        if shown:
            miou = [scoring.mean_iou(cm) for cm in per]
            objects = np.asarray([scoring.object_iou(cm) for cm in per])
            notes = [f"#{i}  mIoU {miou[i]:.2f}, objects {objects[i]:.2f}" for i in range(len(per))]
            first = list(range(min(shown, len(preds))))
            report.figures["overlays.png"] = mask_grid(
                [test.inputs[i] for i in first], [test.targets[i] for i in first], [preds[i] for i in first], names,
                notes=[notes[i] for i in first], title="Test images: truth and prediction")
            # ranked by the objects' IoU: an image's mean IoU drops to ~1/2 for a few stray pixels of
            # an absent class, which would fill the figure with near-perfect answers
            worst = np.argsort(objects, kind="stable")[:shown]
            report.figures["worst.png"] = mask_grid(
                [test.inputs[i] for i in worst], [test.targets[i] for i in worst], [preds[i] for i in worst], names,
                notes=[notes[i] for i in worst], title=f"The {len(worst)} worst test images by object IoU")
        out = report.prefixed("test")
        train_masks = data.arrays["y_train"]
        for base, scores in baselines(train_masks, test.targets, len(names)).items():
            out.metrics.update({f"baseline/{base}/{k}": v for k, v in scores.items()})
        val = data.examples.get("val")
        if val is not None and len(val):
            network = self._score(served, val)[0].metrics["mean_iou"]
            line = scoring.losing_to_baseline("mean_iou", True, network, {
                b: s["mean_iou"] for b, s in baselines(train_masks, val.targets, len(names)).items()},
                "more epochs, model=unet, or a larger model.filters")
            if line:
                out.warnings.append(line)
        return out

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        return self._score(served, examples)[0]

    def _score(self, served: Served, examples: Examples):
        """(Report of unprefixed metrics and the per-class table, predicted masks, pixel confusion
        matrix per image)."""
        from dlrun import metrics as scoring

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}': no true masks to score against",
                             "give a folder with images/ and masks/ sub-folders, or use dlrun predict")
        names = _class_names(served)
        preds = self._segment(served, examples.inputs)
        per = _confusions(examples.targets, preds, len(names))
        metrics, rows = scoring.segmentation(sum(per), names)
        return Report(metrics=metrics, tables={"per_class": rows}, primary="mean_iou"), preds, per

    @staticmethod
    def _segment(served: Served, inputs, batch: int = 16) -> list:
        """The served model's masks for images of any sizes (same-size groups batched)."""
        from dlrun.data.images import same_size_batches

        out = [None] * len(inputs)
        for group in same_size_batches(inputs, batch):
            res = served.model(np.stack([np.asarray(inputs[j]) for j in group]).astype("float32"), training=False)
            masks = np.asarray(res["mask"])
            for row, j in enumerate(group):
                out[j] = masks[row]
        return out

    # -- user files ---------------------------------------------------------------------------
    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A folder with images/ and masks/ sub-folders (labelled: eval), or an image file or a
        folder of images (predict)."""
        import pandas as pd
        from omegaconf import OmegaConf

        from dlrun.data import masks as mask_data
        from dlrun.data.csv import FileOptions
        from dlrun.data.detection import read_image
        from dlrun.data.images import image_files

        if not source:
            raise DlrunError("no input", "input=<image file or folder>")
        path = Path(source)
        names = _class_names(served) if served is not None else None
        if path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir():
            given = FileOptions.of(cfg.get("data"))
            opts = OmegaConf.create({"palette": given.palette, "classes": names, "skip_bad_files": given.skip_bad_files})
            src = mask_data.read_folder(path / "images", path / "masks", opts, n_classes=len(names) if names else None)
            images, targets, files = src.images, src.masks, src.files
        else:
            files = [str(f) for f in image_files(source, mask_data.IMAGE_SUFFIXES)]
            images, targets = [read_image(f) for f in files], None
        ex = Examples(_stacked(images, "float32"), _stacked(targets, "int32") if targets is not None else None,
                      pd.DataFrame({"file": files}), path.stem or path.name, str(path.resolve()))
        ex.files = files
        return ex

    def predict(self, cfg, served: Served, examples: Examples):
        """One row per image: its mask PNG, its overlay PNG, size and the fraction of each class,
        the PNGs in the folder `output=` names (or <stem>_masks/ beside output=<file>.csv)."""
        import pandas as pd
        from PIL import Image

        from dlrun.data.masks import overlay, write_mask_png

        names = _class_names(served)
        options = cfg.get("predict") or {}
        out = Path(str(options.get("output") or "predictions.csv"))
        folder = out.with_name(out.stem + "_masks") if out.suffix.lower() == ".csv" else out
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DlrunError(f"cannot create the output folder '{folder}': {e.strerror}") from None
        files = getattr(examples, "files", None) or [f"image_{i}" for i in range(len(examples))]
        preds = self._segment(served, examples.inputs)
        rows, used = [], set()
        for i, (f, mask) in enumerate(zip(files, preds, strict=True)):
            stem = Path(f).stem if Path(f).stem not in used else f"{Path(f).stem}_{i}"
            used.add(stem)
            mask_path, overlay_path = folder / f"{stem}.png", folder / f"{stem}_overlay.png"
            write_mask_png(mask_path, mask, len(names))
            Image.fromarray(overlay(examples.inputs[i], mask, len(names))).save(overlay_path)
            counts = np.bincount(np.asarray(mask).ravel(), minlength=len(names)) / mask.size
            rows.append({"mask": str(mask_path), "overlay": str(overlay_path), "height": int(mask.shape[0]),
                         "width": int(mask.shape[1]),
                         **{f"fraction_{n}": round(float(counts[c]), 4) for c, n in enumerate(names)}})
        return pd.DataFrame(rows)


# -- helpers ------------------------------------------------------------------------------------


def model_arrays(images: list, masks: list, size) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, any sizes) -> float32 (N, h, w, C) in [0, 1] at `size` (bilinear); masks ->
    int32 (N, h, w) (nearest neighbour: a class index is never blended)."""
    import tensorflow as tf

    h, w = size
    c = int(images[0].shape[-1]) if images else 3
    x = np.zeros((len(images), h, w, c), dtype="float32")
    y = np.zeros((len(images), h, w), dtype="int32")
    for i, (img, mask) in enumerate(zip(images, masks, strict=True)):
        if img.shape[:2] != (h, w):
            img = tf.image.resize(img, (h, w)).numpy()
            mask = tf.image.resize(np.asarray(mask)[..., None], (h, w), method="nearest").numpy()[..., 0]
        x[i] = np.asarray(img, dtype="float32") / 255.0
        y[i] = mask
    return np.clip(x, 0.0, 1.0), y


def baselines(train_masks: np.ndarray, targets, n_classes: int) -> dict[str, dict]:
    """Two answers that need no network, scored like it on `targets` (masks of any sizes):
    majority: every pixel the most frequent class of the training masks; prior: at each pixel
    position the class most frequent there over the training masks (resized to each image by
    nearest neighbour)."""
    from dlrun import metrics as scoring

    counts = np.stack([(train_masks == c).sum(axis=0) for c in range(n_classes)])  # (classes, h, w)
    majority = int(counts.sum(axis=(1, 2)).argmax())
    prior = counts.argmax(axis=0)
    h, w = prior.shape
    out = {}
    for name, answer in (("majority", lambda t: np.full(t.shape, majority)),
                         ("prior", lambda t: prior[np.ix_(np.arange(t.shape[0]) * h // t.shape[0],
                                                          np.arange(t.shape[1]) * w // t.shape[1])])):
        cm = sum(scoring.pixel_confusion(t, answer(np.asarray(t)), n_classes) for t in targets)
        out[name] = scoring.segmentation(cm, [str(c) for c in range(n_classes)])[0]
        out[name] = {k: v for k, v in out[name].items() if "/" not in k}
    return out


def _confusions(targets, preds, n_classes: int) -> list:
    from dlrun.metrics import pixel_confusion

    out = []
    for t, p in zip(targets, preds, strict=True):
        if np.shape(t) != np.shape(p):
            raise DlrunError(f"a mask is {np.shape(t)}, its prediction {np.shape(p)}")
        if np.max(t) >= n_classes:
            raise DlrunError(f"a mask holds class index {int(np.max(t))}, the model knows {n_classes} classes")
        out.append(pixel_confusion(t, p, n_classes))
    return out


def _class_names(served: Served) -> list[str]:
    return list(served.meta.get("class_names") or served.output_columns.get("probability") or [])


def _stacked(arrays: list, dtype: str):
    """One array when every item has the same shape, else a list (images of several sizes)."""
    if len({np.shape(a) for a in arrays}) == 1:
        return np.stack(arrays).astype(dtype)
    return [np.asarray(a, dtype=dtype) for a in arrays]


def _examples(src, indices, name: str) -> Examples:
    import pandas as pd

    files = [src.files[i] for i in indices] if src.files else [f"{name}_{i}" for i in indices]
    ex = Examples(_stacked([src.images[i] for i in indices], "float32"),
                  _stacked([src.masks[i] for i in indices], "int32"), pd.DataFrame({"file": files}), name, src.source)
    ex.files = files
    return ex


def _mask_frame(src, indices, names):
    """One row per image: file, size and the fraction of its pixels in each class."""
    import pandas as pd

    rows = []
    for i in indices:
        m = np.asarray(src.masks[i])
        counts = np.bincount(m.ravel(), minlength=len(names)) / m.size
        rows.append({"file": src.files[i] if src.files else f"image_{i}", "height": int(m.shape[0]),
                     "width": int(m.shape[1]), **{f"fraction_{n}": round(float(counts[c]), 4)
                                                  for c, n in enumerate(names)}})
    return pd.DataFrame(rows)

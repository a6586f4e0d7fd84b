"""What an SSD trains on: a DetectionSet as model arrays (resized images, relative boxes padded to
model.max_boxes), the training augmentation (zoom-out expansion and SSD random crop as tf
functions, Keras' bounding-box-aware RandomFlip, colour jitter) and the tf.data pipeline that
matches boxes to the model's default boxes."""

from __future__ import annotations

import numpy as np

from dlrun.data.detection import DetectionSet
from dlrun.errors import DlrunError


def model_arrays(src: DetectionSet, indices, size: int, max_boxes: int, warnings: list | None = None):
    """(images float32 (n, size, size, 3) in [0, 1], boxes (n, M, 4) relative xyxy, labels (n, M)
    with -1 padding). Images with more than `max_boxes` boxes keep the largest ones (reported)."""
    import tensorflow as tf

    n = len(indices)
    x = np.zeros((n, size, size, 3), dtype="float32")
    b = np.zeros((n, max_boxes, 4), dtype="float32")
    lab = -np.ones((n, max_boxes), dtype="int32")
    for row, i in enumerate(indices):
        img = src.images[i]
        h, w = img.shape[:2]
        x[row] = img / 255.0 if (h, w) == (size, size) else tf.image.resize(img, (size, size)).numpy() / 255.0
        boxes, labels = np.asarray(src.boxes[i]).reshape(-1, 4), np.asarray(src.labels[i])
        if len(boxes) > max_boxes:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = np.sort(np.argsort(-area)[:max_boxes])
            if warnings is not None:
                warnings.append(f"{src.files[i] if src.files else f'image {i}'}: {len(boxes)} boxes, "
                                f"kept the {max_boxes} largest (model.max_boxes)")
            boxes, labels = boxes[keep], labels[keep]
        k = len(boxes)
        b[row, :k] = boxes / np.array([w, h, w, h], dtype="float32")
        lab[row, :k] = labels
    return x, b, lab


AUGMENT_KEYS = ("flip", "color_jitter", "expand", "expand_max", "crop", "crop_min_area", "crop_min_cover")


def _augment_value(augment_cfg, key: str, default: float, lo: float, hi: float) -> float:
    raw = augment_cfg.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not lo <= value <= hi:
        raise DlrunError(f"task.augment.{key}: '{raw}' is not a number in [{lo:g}, {hi:g}]")
    return value


def augmenter(augment_cfg, seed: int):
    """The training augmentation, applied in order, or None when everything is off.

    Zoom-out expansion and SSD random crop (box-moving tf functions, see `expand_op`/`crop_op`),
    then Keras' bounding-box-aware RandomFlip, then pixel-only colour jitter.
    """
    import keras

    augment_cfg = augment_cfg or {}
    unknown = sorted(set(augment_cfg) - set(AUGMENT_KEYS))
    if unknown:
        raise DlrunError(f"task.augment: unknown key(s) {', '.join(unknown)}", f"valid: {', '.join(AUGMENT_KEYS)}")
    steps = []
    expand = _augment_value(augment_cfg, "expand", 0.0, 0.0, 1.0)
    expand_max = _augment_value(augment_cfg, "expand_max", 2.0, 1.0, 16.0)
    if expand > 0 and expand_max > 1:
        steps.append(expand_op(expand, expand_max, seed + 3))
    crop = _augment_value(augment_cfg, "crop", 0.0, 0.0, 1.0)
    min_area = _augment_value(augment_cfg, "crop_min_area", 0.3, 0.01, 1.0)
    min_cover = _augment_value(augment_cfg, "crop_min_cover", 0.3, 0.0, 1.0)
    if crop > 0:
        steps.append(crop_op(crop, min_area, min_cover, seed + 4))
    flip = str(augment_cfg.get("flip", "horizontal")) if augment_cfg else "none"
    if flip not in ("none", "horizontal", "vertical", "horizontal_and_vertical"):
        raise DlrunError(f"task.augment.flip: unknown value '{flip}'",
                         "valid: none, horizontal, vertical, horizontal_and_vertical")
    if flip != "none":
        steps.append(keras.layers.RandomFlip(flip, bounding_box_format="rel_xyxy", seed=seed))
    jitter = _augment_value(augment_cfg, "color_jitter", 0.0, 0.0, 1.0)
    if jitter > 0:  # pixel-only: boxes stay where they are
        steps.append(keras.layers.RandomBrightness(jitter, value_range=(0.0, 1.0), seed=seed + 1))
        steps.append(keras.layers.RandomContrast(jitter, value_range=(0.0, 1.0), seed=seed + 2))
    return steps or None


# Random crop and zoom-out are written with tf ops because the Keras 3.15 layers do not do them
# right (checked on boxes; see docs/detection.md): keras.layers.RandomCrop crops a fixed output size
# (no random scale/aspect), shifts x by the *row* offset and y by the column offset, and keeps
# boxes that end up outside the crop with their labels (zero-area boxes that are still "objects");
# keras.layers.RandomZoom zooms out about the image centre only and fills with one scalar (or
# reflects, which draws phantom objects without boxes). tf.image.sample_distorted_bounding_box is
# the library's SSD-style window sampler, so the crop uses it.


def _drop(boxes, labels, keep):
    """Boxes not kept become padding rows (zeros, label -1): the matcher ignores them."""
    import tensorflow as tf

    return tf.where(keep[:, None], boxes, 0.0), tf.where(keep, labels, -1)


def expand_op(probability: float, max_ratio: float, seed: int):
    """Zoom-out: with `probability`, put the image at a random place of a canvas up to
    `max_ratio` times its side filled with the image's mean colour, then resize back to the image
    size; boxes (rel_xyxy) shrink and shift with it. Small objects for the small default boxes."""
    import tensorflow as tf

    def apply(image, boxes, labels):
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        on = tf.random.uniform([], seed=seed) < probability
        ratio = tf.where(on, tf.random.uniform([], 1.0, max_ratio, seed=seed + 1), 1.0)
        nh = tf.cast(tf.round(tf.cast(h, tf.float32) * ratio), tf.int32)
        nw = tf.cast(tf.round(tf.cast(w, tf.float32) * ratio), tf.int32)
        top = tf.random.uniform([], 0, nh - h + 1, dtype=tf.int32, seed=seed + 2)
        left = tf.random.uniform([], 0, nw - w + 1, dtype=tf.int32, seed=seed + 3)
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        canvas = tf.pad(image - mean, [[top, nh - h - top], [left, nw - w - left], [0, 0]]) + mean
        out = tf.image.resize(canvas, (h, w), antialias=True)
        scale = tf.cast(tf.stack([w, h, w, h]), tf.float32) / tf.cast(tf.stack([nw, nh, nw, nh]), tf.float32)
        shift = tf.cast(tf.stack([left, top, left, top]), tf.float32) / tf.cast(tf.stack([nw, nh, nw, nh]), tf.float32)
        boxes, labels = _drop(boxes * scale + shift, labels, labels >= 0)
        return tf.where(on, out, image), boxes, labels

    return apply


def crop_op(probability: float, min_area: float, min_cover: float, seed: int):
    """SSD random crop: with `probability`, a window of `min_area`..1 of the image area (aspect
    0.5..2) that covers at least `min_cover` of some box (tf.image.sample_distorted_bounding_box),
    resized back to the image size. Boxes whose centre lies in the window are clipped to it and
    kept; the others become padding."""
    import tensorflow as tf

    def apply(image, boxes, labels):
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        real = labels >= 0
        yxyx = tf.gather(tf.boolean_mask(boxes, real), [1, 0, 3, 2], axis=1)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape, yxyx[None], min_object_covered=min_cover, aspect_ratio_range=(0.5, 2.0),
            area_range=(min_area, 1.0), max_attempts=50, use_image_if_no_bounding_boxes=True, seed=seed)
        on = tf.random.uniform([], seed=seed + 1) < probability
        begin = tf.where(on, begin, tf.zeros_like(begin))
        size = tf.where(on, size, tf.stack([h, w, -1]))
        return crop_window(image, boxes, labels, begin, size)

    return apply


def crop_window(image, boxes, labels, begin, size):
    """The window (begin, size as from sample_distorted_bounding_box: [y, x, 0], [h, w, -1]) of
    the image resized back to its size; boxes whose centre lies in it are clipped to it, the
    others become padding (a box mostly outside would teach the model a sliver as an object)."""
    import tensorflow as tf

    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    cropped = tf.image.resize(tf.slice(image, begin, size), shape[:2])
    y0, x0 = tf.cast(begin[0], tf.float32) / h, tf.cast(begin[1], tf.float32) / w
    ch, cw = tf.cast(size[0], tf.float32) / h, tf.cast(size[1], tf.float32) / w
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (labels >= 0) & (cx > x0) & (cx < x0 + cw) & (cy > y0) & (cy < y0 + ch)
    moved = tf.clip_by_value((boxes - tf.stack([x0, y0, x0, y0])) / tf.stack([cw, ch, cw, ch]), 0.0, 1.0)
    keep = inside & (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    boxes, labels = _drop(moved, labels, keep)
    return cropped, boxes, labels


def augment_fn(steps):
    """A tf.data map function: (image, boxes, labels) -> the same, augmented together. `steps`:
    Keras layers (bounding-box-aware or pixel-only) and box-moving functions from `augmenter`."""
    import keras
    import tensorflow as tf

    def apply(image, boxes, labels):
        labels = tf.cast(labels, tf.int32)
        for step in steps:
            if not isinstance(step, keras.layers.Layer):
                image, boxes, labels = step(image, boxes, labels)
            elif "bounding_box_format" in step.get_config():
                data = {"images": image, "bounding_boxes": {"boxes": boxes, "labels": tf.cast(labels, tf.float32)}}
                data = step(data, training=True)
                image, boxes = data["images"], data["bounding_boxes"]["boxes"]
                labels = tf.cast(data["bounding_boxes"]["labels"], tf.int32)
            else:
                image = step(image, training=True)
        return image, boxes, labels

    return apply


def pipeline(x, b, lab, anchors, batch_size: int, positive: float, negative: float, training: bool = False,
             seed: int = 0, augment=None, with_targets: bool = True):
    """Batched tf.data of (image, {"loc", "cls"}) matched to `anchors` (training/validation loss)."""
    import tensorflow as tf

    from dlrun.detection.boxes import match

    ds = tf.data.Dataset.from_tensor_slices((x, b, lab))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if training and augment:
        fn = augment_fn(augment)
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    anchors = tf.constant(anchors)

    def targets(image, boxes, labels):
        loc, cls = match(anchors, boxes, labels, positive, negative)
        return image, {"loc": loc, "cls": cls}

    ds = ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

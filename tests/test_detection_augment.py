"""Detection augmentation that moves boxes (random crop, zoom-out expansion) and the tfds loader.

The augmentation checks run on generated shapes scenes inside tf.data: after a crop or an
expansion every kept box is the tight extent of its shape's visible pixels (within 2 pixels),
dropped boxes are padding rows, and labels stay on their rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import stderr_line

from dlrun.errors import DlrunError

SIZE = 96


def _scenes(n: int, seed: int = 0):
    """Noise-free shapes scenes whose boxes do not overlap (each shape fully visible), with the
    colour of each shape (every pixel of a shape has exactly its colour)."""
    from dlrun.data.detection import shapes_scene

    rng = np.random.default_rng(seed)
    images, boxes, labels, colours = [], [], [], []
    while len(images) < n:
        img, b, lab = shapes_scene(rng, SIZE, 4, 0.15, 0.35, noise=0.0)
        if len(b) < 2 or any(_overlaps(b[i], b[j]) for i in range(len(b)) for j in range(i)):
            continue
        x1, y1, x2, y2 = b.astype(int).T
        colour = img[(y1 + 3 * y2) // 4, (x1 + x2) // 2] / 255.0  # inside every shape class
        if any(not np.array_equal(_shape_bounds(img / 255.0, c)[0], bk) for c, bk in zip(colour, b, strict=True)):
            continue  # a colour too close to another shape's (the generator tries 10 times only)
        colours.append(colour)
        images.append(img / 255.0)
        boxes.append(np.pad(b / SIZE, ((0, 6 - len(b)), (0, 0))))
        labels.append(np.pad(lab, (0, 6 - len(lab)), constant_values=-1))
    return (np.asarray(images, "float32"), np.asarray(boxes, "float32"), np.asarray(labels, "int32"),
            colours)


def _overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _augmented(augment: dict, n: int, seed: int = 0):
    import tensorflow as tf

    from dlrun.detection.pipeline import augment_fn, augmenter

    x, b, lab, colours = _scenes(n, seed)
    tf.random.set_seed(None)  # no global seed (a run sets one): the same windows whatever ran before
    ds = tf.data.Dataset.from_tensor_slices((x, b, lab)).map(augment_fn(augmenter(augment, seed=7)))
    out = [tuple(v.numpy() for v in row) for row in ds]
    return x, b, lab, colours, out


def _shape_bounds(img, colour):
    """Tight pixel bounds (x1, y1, x2, y2) of the pixels of `colour`, or None when none is visible."""
    # a shape differs from the background by >= 0.3 (summed over RGB) and from other shapes by
    # > 0.5: 0.15 keeps edge pixels that are mostly shape after resampling and nothing else
    # (the largest connected part: resampled edges between two other colours can pass by it)
    from scipy import ndimage

    parts, n = ndimage.label(np.abs(img - colour).sum(axis=-1) < 0.15)
    if n == 0:
        return None
    mask = parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]), mask


def _check_boxes_follow_shapes(b, lab, colours, out, atol: float = 2.0):
    """Every kept box is its shape's visible extent (a box clipped at the border: it holds the
    visible part, which reaches that border); dropped boxes are padding whose shape, if partly
    visible, is cut by the image border (its centre left the window). Returns (kept, dropped)."""
    kept = dropped = 0
    for i, (img, boxes, labels) in enumerate(out):
        assert img.shape == (SIZE, SIZE, 3) and boxes.shape == (6, 4) and labels.shape == (6,)
        for k in range(6):
            if lab[i, k] < 0:  # padding stays padding
                assert labels[k] == -1
                continue
            found = _shape_bounds(img, colours[i][k])
            if labels[k] == -1:
                dropped += 1
                assert (boxes[k] == 0).all()
                if found is not None:  # a shape whose centre left the window: cut by the border
                    x1, y1, x2, y2 = found[0]
                    assert min(x1, y1) == 0 or max(x2, y2) == SIZE, (i, k, found[0])
                continue
            kept += 1
            assert labels[k] == lab[i, k]  # the label stays on its box's row
            assert found is not None, (i, k, boxes[k])
            box, seen = boxes[k] * SIZE, found[0]
            at_border = (box <= 0.01) | (box >= SIZE - 0.01)
            if at_border.any():  # clipped (a triangle cut at its base is narrower than its box)
                assert (seen[:2] >= box[:2] - atol).all() and (seen[2:] <= box[2:] + atol).all(), (i, k)
                np.testing.assert_allclose(seen[at_border], box[at_border], atol=atol)
            else:
                np.testing.assert_allclose(box, seen, atol=atol, err_msg=f"image {i} box {k}")
    return kept, dropped


def test_random_crop_keeps_boxes_on_their_shapes_and_drops_boxes_outside_the_window():
    # windows of >= 25% of the area are resized back up to 2.8x: edges move by up to ~1.5 pixels
    x, b, lab, colours, out = _augmented({"flip": "none", "crop": 1.0, "crop_min_area": 0.25,
                                          "crop_min_cover": 0.0}, n=24)
    kept, dropped = _check_boxes_follow_shapes(b, lab, colours, out, atol=3.0)
    assert kept > 0 and dropped > 0  # small windows drop some boxes
    changed = sum(not np.allclose(img, x[i]) for i, (img, _, _) in enumerate(out))
    assert changed >= 20  # crop: 1.0 crops (nearly) every image


def test_crop_window_keeps_boxes_by_their_centre():
    import tensorflow as tf

    from dlrun.detection.pipeline import crop_window

    img = np.zeros((96, 96, 3), "float32")
    img[10:40, 10:40, 0] = 1.0  # A: red square, centre x 25: kept
    img[50:80, 36:70, 1] = 1.0  # B: green, centre x 53, partly inside the left half: dropped
    img[60:90, 30:60, 2] = 1.0  # C: blue, centre x 45: kept, clipped at x 48
    boxes = np.array([[10, 10, 40, 40], [36, 50, 70, 80], [30, 60, 60, 90], [0, 0, 0, 0]], "float32") / 96
    labels = np.array([2, 0, 1, -1], "int32")
    out, b, lab = (v.numpy() for v in crop_window(tf.constant(img), tf.constant(boxes), tf.constant(labels),
                                                  tf.constant([0, 0, 0]), tf.constant([96, 48, -1])))
    assert lab.tolist() == [2, -1, 1, -1] and (b[1] == 0).all() and (b[3] == 0).all()
    np.testing.assert_allclose(b[[0, 2]] * 96, [[20, 10, 80, 40], [60, 60, 96, 90]], atol=1e-4)
    for channel, box in ((0, b[0]), (2, b[2])):  # the left half stretched 2x: shapes under their boxes
        ys, xs = np.nonzero(out[..., channel] > 0.5)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box * 96, atol=1)
    assert out[..., 1].max() > 0.5  # B's sliver is still in the picture, without a box


def test_expansion_shrinks_boxes_onto_a_mean_colour_canvas():
    x, b, lab, colours, out = _augmented({"flip": "none", "expand": 1.0, "expand_max": 2.5}, n=16, seed=1)
    # shrunk up to 2.5x: a triangle's one-pixel apex blends into the canvas (up to ~2.5 pixels)
    kept, dropped = _check_boxes_follow_shapes(b, lab, colours, out, atol=3.0)
    assert dropped == 0 and kept == int((lab >= 0).sum())  # zoom-out never loses a box
    ratios = []
    for i, (img, boxes, _) in enumerate(out):
        real = lab[i] >= 0
        ratios.append(np.mean((b[i, real, 2] - b[i, real, 0]) / (boxes[real, 2] - boxes[real, 0])))
        # the margin is the image's mean colour (no reflected copies of shapes without boxes)
        mean = x[i].mean(axis=(0, 1))
        ys, xs = np.nonzero(np.abs(img - mean).sum(axis=-1) > 0.02)
        margin = img[: ys.min()].reshape(-1, 3) if ys.min() > 2 else img[:, : xs.min()].reshape(-1, 3)
        if len(margin):
            np.testing.assert_allclose(margin, np.broadcast_to(mean, margin.shape), atol=0.02)
    ratios = np.asarray(ratios)
    assert ratios.min() >= 0.98 and ratios.max() <= 2.55 and ratios.std() > 0.05  # random zoom in 1..2.5


def test_crop_expand_and_flip_run_in_the_training_pipeline():
    from dlrun.detection.boxes import default_boxes
    from dlrun.detection.pipeline import augmenter, pipeline

    x, b, lab, _ = _scenes(8)
    anchors = default_boxes([12, 6, 3], [0.1, 0.3, 0.6, 0.9], [1.0, 2.0, 0.5])
    steps = augmenter({"flip": "horizontal", "crop": 0.5, "expand": 0.5, "color_jitter": 0.1}, seed=1)
    assert [type(s).__name__ for s in steps][2:] == ["RandomFlip", "RandomBrightness", "RandomContrast"]
    ds = pipeline(x, b, lab, anchors, 4, 0.5, 0.2, training=True, seed=1, augment=steps)
    for _ in range(2):  # two epochs: reshuffled, re-augmented
        for images, targets in ds:
            assert images.shape == (4, SIZE, SIZE, 3) and np.isfinite(images.numpy()).all()
            cls = targets["cls"].numpy()
            assert cls.shape == (4, len(anchors)) and (cls > 0).any(axis=1).sum() >= 1
            assert cls.max() <= 3 and np.isfinite(targets["loc"].numpy()).all()


@pytest.mark.parametrize("augment, message", [
    ({"crop": 1.5}, "task.augment.crop: '1.5' is not a number in [0, 1]"),
    ({"expand": 0.5, "expand_max": 0.5}, "task.augment.expand_max: '0.5' is not a number in [1, 16]"),
    ({"crop": "often"}, "task.augment.crop: 'often' is not a number in [0, 1]"),
    ({"zoom": 0.2}, "task.augment: unknown key(s) zoom"),
])
def test_bad_augment_values_are_one_clear_error(augment, message):
    from dlrun.detection.pipeline import augmenter

    with pytest.raises(DlrunError) as e:
        augmenter(augment, seed=0)
    assert str(e.value).splitlines()[0].startswith(message)


def test_detection_augment_defaults_leave_crop_and_expand_off(compose):
    from dlrun.detection.pipeline import augmenter

    shapes = compose("task=detection", "tracking=off")
    assert shapes.task.augment.crop == 0.0 and shapes.task.augment.expand == 0.0
    assert [type(s).__name__ for s in augmenter(shapes.task.augment, 0)] == ["RandomFlip"]
    voc = compose("experiment=voc_ssd", "tracking=off", "data.path=x")
    assert voc.task.augment.crop > 0 and voc.task.augment.expand > 0
    assert len(augmenter(voc.task.augment, 0)) == 5  # expand, crop, flip, brightness, contrast


# -- data=tfds_detection ---------------------------------------------------------------------------


def test_tfds_example_becomes_a_pixel_box_record():
    from dlrun.data.detection import tfds_record

    image = np.zeros((50, 200, 3), "uint8")
    example = {"image": image, "objects": {
        "bbox": np.array([[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.2, 0.4]], "float32"),
        "label": np.array([3, 0, 1]), "is_crowd": np.array([False, True, False])}}
    img, boxes, labels = tfds_record(example)
    assert img is image
    # ymin, xmin, ymax, xmax relative -> xmin, ymin, xmax, ymax pixels; the crowd box is left out,
    # the zero-height one is kept here (the loader's box check reports it)
    np.testing.assert_allclose(boxes, [[50, 5, 150, 25], [40, 10, 80, 10]])
    assert labels.tolist() == [3, 1] and labels.dtype == np.int64
    img, boxes, labels = tfds_record({"image": image, "objects": {"bbox": np.zeros((0, 4)), "label": np.zeros(0)}})
    assert boxes.shape == (0, 4) and labels.shape == (0,)
    with pytest.raises(DlrunError, match="no 'objects' feature"):
        tfds_record({"image": image, "labels": np.zeros(0)})


def test_tfds_detection_without_the_package_is_one_line(run_dlrun):
    import importlib.util

    if importlib.util.find_spec("tensorflow_datasets") is not None:
        pytest.skip("tensorflow-datasets is installed here")
    proc = run_dlrun("train", "task=detection", "data=tfds_detection", "data.dataset=voc/2007", "tracking=off",
                     expect=2)
    assert "data=tfds_detection needs the tensorflow-datasets package" in stderr_line(proc)

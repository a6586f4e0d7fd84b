"""Heat maps: which pixels a class score depends on, and a test of whether that is true.

    gradcam    Grad-CAM (Selvaraju et al. 2017): the last convolutional layer's maps weighted by
               the spatial mean of the class score's gradient, ReLU, resized to the image
    saliency   the largest absolute gradient of the class score over the channels of each pixel
               (Simonyan et al. 2014)
    occlusion  the drop in the class's probability when a square of `fill` covers that spot
               (Zeiler & Fergus 2014), averaged over the squares covering each pixel

Every map is checked with the deletion test: put `fill` into the map's top `fraction` of pixels
and, separately, into as many random pixels; a faithful map drops the explained class's
probability more than random pixels do (`<method>/deletion_drop` vs `random/deletion_drop`).
"""

from __future__ import annotations

import numpy as np

from dlrun.contract import Report
from dlrun.errors import DlrunError
from dlrun.explain import EXPLAINERS


def gradcam_maps(lens, x, classes, opts):
    """Grad-CAM maps (n, height, width) in [0, 1] for images `x` in [0, 1] units."""
    import keras
    import tensorflow as tf

    layer = lens.last_conv() if opts.layer == "auto" else opts.layer
    if layer not in lens.map_layers():
        raise DlrunError(f"layer '{layer}' has no 2-D maps: Grad-CAM needs a convolutional layer",
                         f"layers with maps: {', '.join(lens.map_layers()) or 'none'}")
    probe = lens.probe((layer,))
    out = []
    for i in range(0, len(x), opts.batch_size):
        xb, cb = tf.constant(x[i:i + opts.batch_size]), tf.constant(classes[i:i + opts.batch_size])
        with tf.GradientTape() as tape:
            maps, scores, _ = probe(lens.network_input(xb), training=False)
            score = lens.explained(scores, cb)
        grads = tape.gradient(score, maps)  # examples are independent: d(sum)/d(maps) is per example
        weights = keras.ops.mean(grads, axis=(1, 2), keepdims=True)
        out.append(keras.ops.relu(keras.ops.sum(weights * maps, axis=-1)))
    return _to_image_size(keras.ops.concatenate(out), x.shape[1:3])


def saliency_maps(lens, x, classes, opts):
    """Gradient saliency (n, height, width) in [0, 1]: max over channels of |d score / d pixel|."""
    import keras
    import tensorflow as tf

    out = []
    for i in range(0, len(x), opts.batch_size):
        xb, cb = tf.constant(x[i:i + opts.batch_size]), tf.constant(classes[i:i + opts.batch_size])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            score = lens.explained(lens.forward(xb), cb)
        out.append(keras.ops.max(keras.ops.abs(tape.gradient(score, xb)), axis=-1))
    return _normalised(np.concatenate([np.asarray(o) for o in out]))


def occlusion_maps(lens, x, classes, opts):
    """Occlusion maps (n, height, width): the mean drop in the class's probability over the
    squares covering each pixel, scaled so the largest drop is 1 (rises clipped at 0)."""
    n, h, w = x.shape[:3]
    ph, pw = max(1, round(opts.patch * h)), max(1, round(opts.patch * w))
    sh, sw = max(1, round(opts.stride * h)), max(1, round(opts.stride * w))
    tops, lefts = _starts(h, ph, sh), _starts(w, pw, sw)
    spots = [(t, left) for t in tops for left in lefts]
    base = lens.confidence(lens.predict(x, opts.batch_size), classes)
    heat, count = np.zeros((n, h, w)), np.zeros((h, w))
    for t, left in spots:
        covered = x.copy()
        covered[:, t:t + ph, left:left + pw] = opts.fill
        drop = base - lens.confidence(lens.predict(covered, opts.batch_size), classes)
        heat[:, t:t + ph, left:left + pw] += drop[:, None, None]
        count[t:t + ph, left:left + pw] += 1
    return _normalised(np.clip(heat / np.maximum(count, 1), 0.0, None))


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Square positions along one side; the last one flush with the edge so every pixel is covered."""
    starts = list(range(0, max(1, size - patch + 1), stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def _to_image_size(maps, size):
    import keras

    resized = keras.ops.image.resize(keras.ops.expand_dims(maps, -1), tuple(int(s) for s in size),
                                     interpolation="bilinear")
    return _normalised(np.asarray(resized)[..., 0])


def _normalised(maps) -> np.ndarray:
    """Each map divided by its maximum (all-zero maps stay zero)."""
    maps = np.asarray(maps, dtype="float64")
    top = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)
    return maps / np.where(top > 0, top, 1.0)[:, None, None]


def deletion_test(lens, x, classes, maps, fraction: float, fill: float, seed: int, batch_size: int = 128):
    """(drop with the map's top pixels deleted, drop with as many random pixels deleted), each the
    mean over images of p(class | x) - p(class | x with those pixels set to `fill`). A pixel is
    a position: all its channels are deleted. Ties in a map go to the earlier pixel."""
    n, h, w = maps.shape
    k = max(1, int(round(fraction * h * w)))
    top = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")[:, :k]
    rng = np.random.default_rng(seed)
    random = np.stack([rng.choice(h * w, size=k, replace=False) for _ in range(n)])

    def deleted(pixels):
        flat = np.array(x, dtype="float32").reshape(n, h * w, -1)
        flat[np.arange(n)[:, None], pixels] = fill
        return flat.reshape(x.shape)

    before = lens.confidence(lens.predict(x, batch_size), classes)
    after_map = lens.confidence(lens.predict(deleted(top), batch_size), classes)
    after_random = lens.confidence(lens.predict(deleted(random), batch_size), classes)
    return float(np.mean(before - after_map)), float(np.mean(before - after_random))


def heatmap_report(name: str, make_maps, lens, x, targets, opts) -> Report:
    """Maps for the first images, an overlay grid and the deletion test."""
    from dlrun.plots.images import image_grid

    n = min(len(x), max(opts.images, opts.deletion_images))
    x = x[:n]
    probabilities = lens.predict(x, opts.batch_size)
    classes = lens.classes(opts.target, probabilities, None if targets is None else targets[:n])
    maps = make_maps(lens, x, classes, opts)
    shown = min(n, opts.images)
    what = "predicted class" if opts.target == "predicted" else ("true class" if opts.target == "true"
                                                                   else f"class {opts.target}")
    figure = image_grid(x[:shown], lens.titles(classes[:shown], probabilities[:shown]),
                        f"{name}: what the {what}'s score depends on", maps=maps[:shown])
    d = min(n, opts.deletion_images)
    drop, random_drop = deletion_test(lens, x[:d], classes[:d], maps[:d], opts.fraction, opts.fill, opts.seed,
                                      opts.batch_size)
    row = {"method": name, "images": d, "deleted": f"{opts.fraction:.0%}", "deletion_drop": drop,
           "random_drop": random_drop}
    return Report(metrics={f"{name}/deletion_drop": drop, "random/deletion_drop": random_drop},
                  tables={f"{name}_deletion": [row]}, figures={f"{name}/heatmaps.png": figure})


@EXPLAINERS.register("gradcam", "Grad-CAM heat maps (last convolutional layer) with the deletion test")
def gradcam(lens, x, targets, opts) -> Report:
    return heatmap_report("gradcam", gradcam_maps, lens, x, targets, opts)


@EXPLAINERS.register("saliency", "Gradient saliency maps (|d class score / d pixel|) with the deletion test")
def saliency(lens, x, targets, opts) -> Report:
    return heatmap_report("saliency", saliency_maps, lens, x, targets, opts)


@EXPLAINERS.register("occlusion", "Occlusion heat maps (probability drop under a sliding square) with the deletion test")
def occlusion(lens, x, targets, opts) -> Report:
    return heatmap_report("occlusion", occlusion_maps, lens, x, targets, opts)

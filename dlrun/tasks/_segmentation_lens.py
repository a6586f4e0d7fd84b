"""The segmentation network seen from inside, for `dlrun explain` and `dlrun attack`
(dlrun/explain/lens.py describes what a lens is; this is the segmentation task's).

The served model is resize -> rescale -> network -> probabilities resized back to the input, so
the classifier lens finds the network, its Resizing layer and the scale unchanged; what differs
is that every pixel has an answer:

- a "class to explain" is a class per pixel: an (n, H, W) array holding the class on the pixels
  whose score is explained and -1 elsewhere (the region). `target=predicted` (default): per
  image the largest non-background class of the answer, over the pixels predicted as it;
  `target=true`: the largest non-background class of the true mask, over its true pixels;
  `target=<class>`: that class over the pixels predicted as it (the whole image if none is).
  A heat map explains the class's logits summed over its region (the usual segmentation
  Grad-CAM); the deletion test drops the mean probability of the class over that same, fixed,
  region.
- attacks ascend the per-pixel cross-entropy (averaged per image) and are scored with the mean
  IoU of the attacked set's pixels (`attack/<method>/eps_<e>/mean_iou`).

Not for segmentation: `tsne` (one code per image and a class per image) and `fooling`
(a confidence per image).
"""

from __future__ import annotations

import numpy as np

from dlrun.errors import DlrunError, did_you_mean
from dlrun.explain.lens import Lens


class SegmentationLens(Lens):
    """Per-pixel class scores of a segmentation network behind its served model."""

    metric = "mean_iou"
    unsupported = ("tsne", "fooling")

    def forward(self, x):
        """Per-pixel class logits (batch, H, W, classes) at the images' own size (as the served
        model answers), differentiable."""
        import keras

        scores = super().forward(x)
        size = tuple(int(s) for s in x.shape[1:3])
        if tuple(scores.shape[1:3]) != size:
            scores = keras.ops.image.resize(scores, size, interpolation="bilinear")
        return scores

    def last_conv(self) -> str:
        """Grad-CAM's layer: the last feature maps before the class scores (the input of the first
        layer named score*: FCN's fc7, U-Net's last decoder block), not the score maps themselves."""
        names = [layer.name for layer in self.network.layers]
        first_score = next((i for i, n in enumerate(names) if n.startswith("score")), None)
        if first_score is None:
            return super().last_conv()
        maps = set(self.map_layers())
        before = [n for n in names[:first_score] if n in maps
                  and not any(k in type(self.network.get_layer(n)).__name__ for k in ("Pool", "Dropout"))]
        return before[-1] if before else super().last_conv()

    def encode(self, targets):
        """True masks (a list or array of (H, W) class indices) -> int64 (n, H, W)."""
        shapes = {np.shape(t) for t in targets}
        if len(shapes) > 1:
            raise DlrunError("the masks have several sizes", "give images of one size (or resize them first)")
        masks = np.asarray(list(targets), dtype="int64")
        if masks.size and (masks.min() < 0 or masks.max() >= len(self.class_names)):
            raise DlrunError(f"a mask holds class index {int(masks.max())}, the model knows "
                             f"{len(self.class_names)} classes")
        return masks

    def loss(self, scores, targets):
        """Per-pixel cross-entropy of the logits with the true mask (the attack averages it per image)."""
        import keras

        return keras.losses.sparse_categorical_crossentropy(targets, scores, from_logits=self.logits)

    def measure(self, answers, targets) -> float:
        """Mean IoU over all pixels of the set (pixels counted over every image, as test/mean_iou)."""
        from dlrun.metrics import mean_iou, pixel_confusion

        return mean_iou(pixel_confusion(np.asarray(targets), np.asarray(answers), len(self.class_names)))

    def correct(self, answers, targets):
        """Per image: do the predicted objects overlap the true ones by at least half (object IoU >= 0.5)?"""
        from dlrun.metrics import object_iou, pixel_confusion

        k = len(self.class_names)
        return np.asarray([object_iou(pixel_confusion(t, a, k)) >= 0.5
                           for a, t in zip(np.asarray(answers), np.asarray(targets), strict=True)])

    def explained(self, scores, classes):
        """Per image: the explained class's logits summed over its region (`classes`, -1 outside),
        the scores resized to the region's size where they differ (Grad-CAM's probe answers at
        the network's size)."""
        import keras

        ops = keras.ops
        size = tuple(int(s) for s in classes.shape[1:3])
        if tuple(scores.shape[1:3]) != size:
            scores = ops.image.resize(scores, size, interpolation="bilinear")
        region = ops.one_hot(ops.cast(classes, "int32"), len(self.class_names))  # -1 -> all zeros
        return ops.sum(ops.cast(region, scores.dtype) * scores, axis=(1, 2, 3))

    def confidence(self, probabilities, classes):
        """Per image: the mean probability of the explained class over its region."""
        p, regions = np.asarray(probabilities), np.asarray(classes)
        inside = regions >= 0
        picked = np.take_along_axis(p, np.maximum(regions, 0)[..., None], axis=-1)[..., 0]
        return (picked * inside).sum(axis=(1, 2)) / np.maximum(inside.sum(axis=(1, 2)), 1)

    def classes(self, which: str, probabilities, targets=None):
        """The class to explain per pixel (see the module docstring): (n, H, W), -1 off its region."""
        answers = self.answers(probabilities)
        if which == "predicted":
            return _largest_object(answers)
        if which == "true":
            if targets is None:
                raise DlrunError("target=true needs true masks",
                                 "these images have none: use target=predicted or a class name")
            return _largest_object(np.asarray(targets))
        if which not in self.class_names:
            raise DlrunError(f"target '{which}' is not a class of this run",
                             did_you_mean(which, ["predicted", "true", *self.class_names]))
        c = self.class_names.index(which)
        region = answers == c
        region[~region.any(axis=(1, 2))] = True  # not predicted anywhere: its score over the whole image
        return np.where(region, c, -1)

    def titles(self, answers, probabilities=None) -> list[str]:
        """Per image: its (at most two) largest non-background classes, with their mean
        probability over their pixels when probabilities are given; background alone otherwise."""
        out = []
        for i, mask in enumerate(np.asarray(answers)):
            counts = np.bincount(mask[mask >= 0].ravel(), minlength=len(self.class_names))
            shown = [int(c) for c in np.argsort(-counts[1:], kind="stable")[:2] + 1 if counts[c]] or [0]
            parts = []
            for c in shown:
                name = self.class_names[c]
                if probabilities is not None:
                    name += f" {np.asarray(probabilities)[i][mask == c, c].mean():.2f}"
                parts.append(name)
            out.append(", ".join(parts))
        return out

    def picture(self, image, answer):
        """An attacked image with its predicted mask laid over it."""
        from dlrun.data.masks import overlay

        return overlay(image, answer, len(self.class_names)).astype("float32") / 255.0


def _largest_object(masks) -> np.ndarray:
    """Per mask: its most frequent non-background class (background when it has none) on that
    class's pixels, -1 elsewhere."""
    masks = np.asarray(masks)
    out = np.full(masks.shape, -1, dtype="int64")
    for i, m in enumerate(masks):
        counts = np.bincount(m.ravel())
        c = int(np.argmax(counts[1:]) + 1) if counts[1:].any() else 0
        out[i][m == c] = c
    return out

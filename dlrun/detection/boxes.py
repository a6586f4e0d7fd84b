"""SSD box machinery (course "Detection"): default boxes, matching, the loss, decoding + NMS.

Coordinates everywhere inside: relative corners (x1, y1, x2, y2) in [0, 1] of the model input.
IoU and the delta coding come from keras.utils.bounding_boxes (compute_iou,
encode_box_to_deltas / decode_deltas_to_boxes with the course's variances); NMS is
tf.image.combined_non_max_suppression. What is written here is what no library offers in this
form: default-box layout per feature map, the SSD matching rule with the ignore band, hard
negative mining and the (L_conf + alpha L_loc) / N loss.
"""

from __future__ import annotations

import math

import numpy as np

VARIANCE = (0.1, 0.1, 0.2, 0.2)  # centre x, centre y, width, height (the course's values)
CODING = "center_xywh"  # (g_cx - d_cx) / d_w / 0.1, ..., log(g_w / d_w) / 0.2, ...


def default_boxes(feature_sizes, scales, aspect_ratios) -> np.ndarray:
    """(A, 4) default boxes in relative xyxy, cell by cell, map by map (the head's order).

    Map l gets, per cell, one box per aspect ratio r at scale s_l (w = s sqrt(r), h = s / sqrt(r))
    plus an extra square box at sqrt(s_l s_{l+1}) as in the SSD paper. `scales` has one entry
    per map plus one (the last only sizes the extra box of the last map).
    """
    sizes = [int(f) for f in feature_sizes]
    scales = [float(s) for s in scales]
    if len(scales) != len(sizes) + 1:
        raise ValueError(f"{len(sizes)} feature maps need {len(sizes) + 1} scales, got {len(scales)}")
    out = []
    for level, f in enumerate(sizes):
        s, s_next = scales[level], scales[level + 1]
        shapes = [(s * math.sqrt(r), s / math.sqrt(r)) for r in aspect_ratios]
        shapes.append((math.sqrt(s * s_next),) * 2)
        centres = (np.arange(f, dtype="float64") + 0.5) / f
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        cells = np.stack([cx.ravel(), cy.ravel()], axis=1)  # row-major like the conv output
        per_cell = np.concatenate([np.concatenate([cells - [w / 2, h / 2], cells + [w / 2, h / 2]], axis=1)[:, None]
                                   for w, h in shapes], axis=1)  # (f*f, k, 4)
        out.append(per_cell.reshape(-1, 4))
    return np.clip(np.concatenate(out), 0.0, 1.0).astype("float32")


def iou(boxes1, boxes2):
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M) (keras.utils.bounding_boxes)."""
    from keras.utils import bounding_boxes

    return bounding_boxes.compute_iou(boxes1, boxes2, "xyxy")


def encode(anchors, boxes):
    from keras.utils import bounding_boxes

    return bounding_boxes.encode_box_to_deltas(anchors, boxes, anchor_format="xyxy", box_format="xyxy",
                                               encoding_format=CODING, variance=list(VARIANCE))


def decode(anchors, deltas):
    from keras.utils import bounding_boxes

    return bounding_boxes.decode_deltas_to_boxes(anchors, deltas, anchor_format="xyxy", box_format="xyxy",
                                                 encoded_format=CODING, variance=list(VARIANCE))


def match(anchors, gt_boxes, gt_labels, positive: float = 0.5, negative: float = 0.2):
    """Targets of one image: (loc (A, 4) encoded offsets, cls (A,) int32).

    cls: 0 background (best IoU < `negative`), -1 ignored (the band between), k + 1 for class k.
    Every real ground-truth box (label >= 0; -1 rows are padding) gets its best default box
    whatever the IoU, plus every default box whose best IoU is >= `positive`.
    """
    import tensorflow as tf

    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    valid = gt_labels >= 0
    overlap = tf.where(valid[None, :], tf.cast(iou(anchors, gt_boxes), tf.float32), -1.0)  # (A, G)
    best_gt = tf.argmax(overlap, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(overlap, axis=1)
    # each real ground-truth box claims its best default box (forced positive)
    best_anchor = tf.argmax(overlap, axis=0, output_type=tf.int32)  # (G,)
    claimed = tf.boolean_mask(best_anchor, valid)[:, None]
    owners = tf.boolean_mask(tf.range(tf.shape(gt_labels)[0], dtype=tf.int32), valid)
    best_iou = tf.tensor_scatter_nd_update(best_iou, claimed, tf.fill(tf.shape(owners), 2.0))
    best_gt = tf.tensor_scatter_nd_update(best_gt, claimed, owners)
    label = tf.gather(gt_labels, best_gt) + 1
    cls = tf.where(best_iou >= positive, label, tf.where(best_iou < negative, 0, -1))
    loc = tf.cast(encode(anchors, tf.gather(gt_boxes, best_gt)), tf.float32)
    loc = tf.where((cls > 0)[:, None], loc, 0.0)  # unmatched rows may encode padding (log 0)
    return loc, tf.cast(cls, tf.int32)


def hard_negatives(cls_true, conf_loss, ratio: float = 3.0):
    """(B, A) bool: per image the background boxes with the highest confidence loss, at most
    `ratio` per positive box (none for an image without positives)."""
    import tensorflow as tf

    negative = tf.equal(cls_true, 0)
    num_pos = tf.reduce_sum(tf.cast(cls_true > 0, tf.int32), axis=1)
    num_neg = tf.minimum(tf.cast(tf.cast(num_pos, tf.float32) * ratio, tf.int32),
                         tf.reduce_sum(tf.cast(negative, tf.int32), axis=1))
    ranked = tf.where(negative, conf_loss, -1.0)  # losses are >= 0
    order = tf.argsort(ranked, axis=1, direction="DESCENDING")
    rank = tf.argsort(order, axis=1)
    return negative & (rank < num_neg[:, None])


def ssd_loss(loc_true, cls_true, loc_pred, logits, ratio: float = 3.0, alpha: float = 1.0):
    """(L_conf + alpha L_loc) / N with softmax cross-entropy on positives and hard negatives,
    smooth L1 summed over the 4 offsets of positives; N = positives in the batch (at least 1).

    Returns (loss, conf / N, loc / N)."""
    import tensorflow as tf

    cls_true = tf.cast(cls_true, tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(cls_true, 0), logits=logits)
    positive = cls_true > 0
    keep = positive | hard_negatives(cls_true, tf.stop_gradient(ce), ratio)
    conf = tf.reduce_sum(tf.where(keep, ce, 0.0))
    diff = tf.abs(loc_true - loc_pred)
    smooth_l1 = tf.reduce_sum(tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5), axis=-1)
    loc = tf.reduce_sum(tf.where(positive, smooth_l1, 0.0))
    n = tf.maximum(tf.reduce_sum(tf.cast(positive, tf.float32)), 1.0)
    return (conf + alpha * loc) / n, conf / n, loc / n


def detect(anchors, loc_pred, logits, score_threshold: float = 0.05, iou_threshold: float = 0.45,
           max_per_class: int = 100, max_total: int = 100):
    """Decode and per-class NMS for a batch: boxes (B, K, 4) relative xyxy, scores (B, K),
    classes (B, K) 0-based, count (B,)."""
    import tensorflow as tf

    boxes = tf.cast(decode(anchors, loc_pred), tf.float32)  # (B, A, 4)
    scores = tf.nn.softmax(logits, axis=-1)[..., 1:]
    out = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=int(max_per_class),
        max_total_size=int(max_total), iou_threshold=float(iou_threshold),
        score_threshold=float(score_threshold), clip_boxes=True)
    return out.nmsed_boxes, out.nmsed_scores, tf.cast(out.nmsed_classes, tf.int32), out.valid_detections


def kmeans_anchors(wh: np.ndarray, levels: int, ratios: int, seed: int = 0):
    """Scales (levels + 1) and aspect ratios from training box shapes (relative w, h): k-means
    (scikit-learn) on log(w/h) for the ratios, quantiles of sqrt(w h) for the per-map scales."""
    from sklearn.cluster import KMeans

    wh = np.asarray(wh, dtype="float64")
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < max(ratios, 2):
        raise ValueError(f"model.anchors=auto needs at least {max(ratios, 2)} training boxes, got {len(wh)}")
    logr = np.log(wh[:, 0] / wh[:, 1])[:, None]
    k = min(ratios, len(np.unique(np.round(logr, 3))))
    centres = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(logr).cluster_centers_.ravel()
    aspect = sorted(float(np.exp(c)) for c in centres)
    size = np.sqrt(wh[:, 0] * wh[:, 1])
    qs = np.quantile(size, np.linspace(0.05, 0.95, levels + 1))
    scales = [float(max(q, 0.02)) for q in qs]
    for i in range(1, len(scales)):  # strictly increasing
        scales[i] = max(scales[i], scales[i - 1] * 1.15)
    return [round(s, 4) for s in scales], [round(a, 4) for a in aspect]

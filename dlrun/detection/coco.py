"""COCO-style evaluation with pycocotools (COCOeval): mAP@[.5:.95], mAP@.5, mAP@.75, mAP by
object size, AR@100 and per-class AP@.5, from boxes in pixel xyxy."""

from __future__ import annotations

import contextlib
import io

import numpy as np


def to_coco(truths, predictions, class_names):
    """COCO ground-truth and result dicts. truths: per image dict(boxes (n, 4) pixel xyxy,
    labels (n,) int, width, height); predictions: per image dict(boxes, labels, scores)."""
    images, annotations, results = [], [], []
    for i, t in enumerate(truths):
        images.append({"id": i, "width": int(t["width"]), "height": int(t["height"])})
        for box, label in zip(np.asarray(t["boxes"], dtype=float).reshape(-1, 4), t["labels"], strict=False):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "area": float(w * h), "iscrowd": 0})
    for i, p in enumerate(predictions):
        for box, label, score in zip(np.asarray(p["boxes"], dtype=float).reshape(-1, 4), p["labels"], p["scores"], strict=False):
            results.append({"image_id": i, "category_id": int(label) + 1, "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    categories = [{"id": k + 1, "name": str(n)} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate(truths, predictions, class_names, quiet: bool = True):
    """(metrics dict, per-class rows, COCOeval) — metrics unprefixed: map, map50, map75,
    map_small/medium/large, ar100. An empty prediction set scores 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, results = to_coco(truths, predictions, class_names)
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if not results:
            return _empty(class_names), [{"class": n, "ap50": 0.0, "ap": 0.0, "objects": _count(gt_dict, k)}
                                         for k, n in enumerate(class_names)], None
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    names = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
    metrics = {n: float(max(s[i], 0.0)) if s[i] >= 0 else float("nan") for i, n in enumerate(names)}
    metrics = {k: v for k, v in metrics.items() if v == v}  # no objects of a size: no value (not NaN)
    metrics["ar100"] = float(max(s[8], 0.0))
    precision = ev.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    rows = []
    for k, n in enumerate(class_names):
        p50 = precision[0, :, k, 0, -1]
        p_all = precision[:, :, k, 0, -1]
        rows.append({"class": n, "ap50": _mean(p50), "ap": _mean(p_all), "objects": _count(gt_dict, k)})
    return metrics, rows, ev


def pr_curves(ev, class_names):
    """Per class (recall points, precision at IoU 0.5), from an accumulated COCOeval."""
    if ev is None:
        return {}
    recall = np.asarray(ev.params.recThrs)
    return {n: (recall, ev.eval["precision"][0, :, k, 0, -1]) for k, n in enumerate(class_names)}


def _mean(p) -> float:
    p = np.asarray(p)
    p = p[p > -1]
    return float(p.mean()) if p.size else float("nan")


def _count(gt_dict, k: int) -> int:
    return sum(1 for a in gt_dict["annotations"] if a["category_id"] == k + 1)


def _empty(class_names):
    return {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": 0.0, "map_medium": 0.0, "map_large": 0.0,
            "ar100": 0.0}

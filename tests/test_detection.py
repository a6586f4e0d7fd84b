"""Object detection: box maths, matching, loss, NMS, loaders, augmentation, COCO mAP, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from dlrun.errors import DlrunError


@pytest.fixture
def det_cfg(compose):
    def make(*overrides):
        return compose("task=detection", "tracking=off", *overrides)

    return make


def _np(x):
    return np.asarray(x)


# -- boxes ----------------------------------------------------------------------------------------


def test_iou_matches_the_course_examples():
    from dlrun.detection.boxes import iou

    # the course: a 5x5 ground truth against a 10x5 default box -> 12.5 / 62.5 = 0.2 (an overlap of
    # 12.5 = half the ground truth: union 25 + 50 - 12.5); two 5x5 boxes sharing 20 -> 20 / 30 = 0.67
    gt = np.array([[0, 0, 5, 5]], "float32")
    anchor = np.array([[2.5, 0, 12.5, 5]], "float32")  # overlap 2.5x5 = 12.5, union 25 + 50 - 12.5 = 62.5
    assert _np(iou(gt, anchor))[0, 0] == pytest.approx(0.2, abs=1e-6)
    a = np.array([[0, 0, 5, 5]], "float32")
    b = np.array([[1, 0, 6, 5]], "float32")  # overlap 4x5 = 20, union 30
    assert _np(iou(a, b))[0, 0] == pytest.approx(20 / 30, abs=1e-6)


def test_encode_decode_round_trip_and_course_coding():
    from dlrun.detection.boxes import decode, encode

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.6, (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.4, (50, 2))], axis=1).astype("float32")
    anchors = np.roll(boxes, 1, axis=0)
    back = _np(decode(anchors, encode(anchors, boxes)))
    np.testing.assert_allclose(back, boxes, atol=1e-5)
    d = _np(encode(np.array([[0.1, 0.1, 0.3, 0.3]], "float32"), np.array([[0.12, 0.1, 0.32, 0.4]], "float32")))
    # (gcx - dcx) / dw / 0.1, (gcy - dcy) / dh / 0.1, log(gw / dw) / 0.2, log(gh / dh) / 0.2
    np.testing.assert_allclose(d[0], [0.02 / 0.2 / 0.1, 0.05 / 0.2 / 0.1, 0.0, np.log(1.5) / 0.2], atol=1e-4)


def test_matching_gives_every_box_a_default_box_and_respects_the_bands():
    from dlrun.detection.boxes import default_boxes, iou, match

    anchors = default_boxes([8, 4, 2], [0.1, 0.3, 0.6, 0.9], [1.0, 2.0, 0.5])
    gt = np.array([[0.01, 0.01, 0.05, 0.04], [0.2, 0.2, 0.7, 0.8], [0.6, 0.1, 0.9, 0.3], [-1, -1, -1, -1]], "float32")
    labels = np.array([2, 0, 1, -1])
    loc, cls = match(anchors, gt, labels)
    cls, loc = _np(cls), _np(loc)
    overlap = _np(iou(anchors, gt[:3]))
    for g in range(3):  # each real box owns its best default box, even the tiny one (IoU < 0.5)
        assert cls[overlap[:, g].argmax()] == labels[g] + 1
    best = overlap.max(axis=1)
    forced = {int(overlap[:, g].argmax()) for g in range(3)}
    free = np.array([i not in forced for i in range(len(anchors))])
    assert (cls[free & (best >= 0.5)] > 0).all()
    assert (cls[free & (best < 0.2)] == 0).all()
    assert (cls[free & (best >= 0.2) & (best < 0.5)] == -1).all()
    assert np.isfinite(loc).all() and (loc[cls <= 0] == 0).all()


def test_hard_negative_mining_keeps_three_negatives_per_positive_with_the_highest_loss():
    import tensorflow as tf

    from dlrun.detection.boxes import hard_negatives, ssd_loss

    rng = np.random.default_rng(1)
    cls = np.zeros((2, 100), "int32")
    cls[0, :5] = 1
    cls[0, 5:10] = -1  # ignored: never a negative
    cls[1, :] = 0  # no positives: no negatives either
    ce = rng.uniform(0, 5, (2, 100)).astype("float32")
    mask = _np(hard_negatives(tf.constant(cls), tf.constant(ce), 3.0))
    assert mask[0].sum() == 15 and mask[1].sum() == 0
    assert not mask[0, :10].any()
    chosen = ce[0][mask[0]]
    others = ce[0, 10:][~mask[0, 10:]]
    assert chosen.min() >= others.max()
    # N guard: no positive anywhere gives a finite loss of zero
    loss, _, _ = ssd_loss(np.zeros((2, 100, 4), "float32"), np.zeros((2, 100), "int32"),
                          np.ones((2, 100, 4), "float32"), np.zeros((2, 100, 3), "float32"))
    assert float(loss) == 0.0


def test_nms_removes_a_duplicate_box():
    from dlrun.detection.boxes import default_boxes, detect, encode

    anchors = default_boxes([2], [0.4, 0.6], [1.0])  # 8 default boxes
    target = np.array([[0.1, 0.1, 0.5, 0.5]], "float32")
    loc = _np(encode(anchors, np.repeat(target, len(anchors), axis=0)))[None]
    logits = np.full((1, len(anchors), 3), -10.0, "float32")
    logits[0, 0, 1] = 5.0  # two default boxes say "class 0" for the same box
    logits[0, 1, 1] = 4.0
    logits[0, 2, 2] = 5.0  # and one says class 1 (per-class NMS keeps it)
    boxes, scores, classes, count = (_np(v) for v in detect(anchors, loc, logits, score_threshold=0.5))
    assert int(count[0]) == 2
    assert sorted(classes[0, :2].tolist()) == [0, 1]
    np.testing.assert_allclose(boxes[0, 0], target[0], atol=1e-4)


def test_kmeans_anchors_find_the_box_shapes():
    from dlrun.detection.boxes import kmeans_anchors

    rng = np.random.default_rng(0)
    s = rng.uniform(0.05, 0.5, 300)
    wh = np.concatenate([np.stack([s, s], 1), np.stack([2 * s[:150], s[:150]], 1)])
    scales, ratios = kmeans_anchors(wh, levels=3, ratios=2)
    assert len(scales) == 4 and all(a < b for a, b in zip(scales, scales[1:], strict=False))
    assert ratios == pytest.approx([1.0, 2.0], abs=0.05)


# -- data -----------------------------------------------------------------------------------------


def test_shapes_are_deterministic_and_boxes_are_exact(det_cfg):
    from dlrun.data.detection import SHAPES, load_shapes

    cfg = det_cfg("data.n_train=20", "data.n_val=5", "data.n_test=5").data
    a, b = load_shapes(cfg), load_shapes(cfg)
    assert all((x == y).all() for x, y in zip(a.images, b.images, strict=True))
    counts = [len(bx) for bx in a.boxes]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) > 2
    assert set(np.concatenate(a.labels)) == set(range(len(SHAPES)))
    for img, boxes in zip(a.images, a.boxes, strict=True):
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes >= 0).all() and (boxes <= 128).all()
    sides = np.concatenate([bx[:, 2] - bx[:, 0] for bx in a.boxes])
    assert sides.min() < 20  # small objects are there


def test_a_shapes_box_is_the_exact_extent_of_its_shape():
    from dlrun.data.detection import shapes_scene

    rng = np.random.default_rng(5)
    for _ in range(20):
        img, boxes, _ = shapes_scene(rng, 64, 1, 0.2, 0.5, noise=0.0)
        x1, y1, x2, y2 = boxes[0].astype(int)
        # the shape's colour (the centre pixel of a circle/square/triangle's lower half) fills pixels
        # touching all four box edges and none outside the box
        colour = img[(y1 + 3 * y2) // 4, (x1 + x2) // 2]
        same = (np.abs(img.astype(int) - colour).sum(axis=-1) == 0)
        ys, xs = np.nonzero(same)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_augmentation_moves_boxes_with_the_shapes():
    import tensorflow as tf

    from dlrun.detection.pipeline import augment_fn, augmenter

    img = np.zeros((32, 32, 3), "float32")
    img[4:12, 2:10] = 1.0  # a white square at x 2..10, y 4..12
    boxes = np.array([[2 / 32, 4 / 32, 10 / 32, 12 / 32], [0, 0, 0, 0]], "float32")
    labels = np.array([1, -1], "int32")
    fn = augment_fn(augmenter({"flip": "horizontal"}, seed=3))
    flipped = 0
    for _ in range(8):
        out_img, out_boxes, out_labels = (v.numpy() for v in fn(tf.constant(img), tf.constant(boxes),
                                                                tf.constant(labels)))
        assert out_labels.tolist() == [1, -1]
        x1, y1, x2, y2 = np.round(out_boxes[0] * 32).astype(int)
        ys, xs = np.nonzero(out_img[..., 0] > 0.5)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
        flipped += x1 == 22
    assert 0 < flipped < 8  # random: some flipped, some not


def _png(path, w, h):
    import tensorflow as tf

    tf.io.write_file(str(path), tf.io.encode_png(np.full((h, w, 3), 128, "uint8")))


def test_voc_xml_and_csv_loaders_report_a_bad_box(tmp_path, det_cfg):
    from dlrun.data.detection import load_voc

    ann, img = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir()
    img.mkdir()
    for i in range(2):
        _png(img / f"im{i}.png", 40, 30)
        bad = "<object><name>cat</name><bndbox><xmin>30</xmin><ymin>5</ymin><xmax>20</xmax><ymax>9</ymax></bndbox></object>"
        (ann / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.png</filename><size><width>40</width><height>30</height></size>"
            "<object><name>dog</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object>"
            + (bad if i == 1 else "") + "</annotation>")
    cfg = det_cfg("data=voc", f"data.path={ann}").data
    src = load_voc(cfg)
    assert src.class_names == ["cat", "dog"] and len(src.images) == 2
    np.testing.assert_allclose(src.boxes[0], [[2, 3, 20, 25]])
    assert len(src.boxes[1]) == 1 and any("im1.png" in w and "no area" in w for w in src.warnings)
    with pytest.raises(DlrunError, match="im1.png: bad box"):
        load_voc(OmegaConf.merge(cfg, {"on_bad_box": "error"}))
    csv = tmp_path / "boxes.csv"
    _png(tmp_path / "a.png", 40, 30)
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                   "a.png,40,30,car,1,1,10,10\na.png,40,30,bus,5,5,39,29\na.png,40,30,car,0,0,80,10\n")
    src = load_voc(OmegaConf.merge(cfg, {"path": str(csv)}))
    assert src.class_names == ["bus", "car"] and src.labels[0].tolist() == [1, 0]
    assert any("a.png" in w and "outside" in w for w in src.warnings)


def test_coco_loader_and_bad_annotations(tmp_path, det_cfg):
    from dlrun.data.detection import load_coco

    _png(tmp_path / "x.png", 50, 40)
    spec = {"images": [{"id": 7, "file_name": "x.png", "width": 50, "height": 40}],
            "categories": [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10]},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [40, 30, 20, 20]},
                            {"id": 3, "image_id": 7, "category_id": 9, "bbox": [1, 1, 2, 2]}]}
    (tmp_path / "ann.json").write_text(json.dumps(spec))
    cfg = det_cfg("data=coco", f"data.annotations={tmp_path / 'ann.json'}", f"data.images={tmp_path}").data
    src = load_coco(cfg)
    assert src.class_names == ["a", "b"]
    np.testing.assert_allclose(src.boxes[0], [[10, 5, 30, 15]])
    assert src.labels[0].tolist() == [1]
    assert any("x.png" in w and "outside" in w for w in src.warnings)
    assert any("annotation 3" in w for w in src.warnings)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DlrunError, match="not a COCO annotations file"):
        load_coco(OmegaConf.merge(cfg, {"annotations": str(tmp_path / "broken.json")}))


# -- evaluation -----------------------------------------------------------------------------------


def test_coco_map_is_one_for_perfect_predictions_and_lower_for_shifted_ones():
    from dlrun.detection.coco import evaluate

    truths = [{"boxes": np.array([[10, 10, 40, 40], [50, 60, 90, 100]], float), "labels": np.array([0, 1]),
               "width": 128, "height": 128},
              {"boxes": np.array([[5, 5, 20, 30]], float), "labels": np.array([2]), "width": 128, "height": 128}]
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": np.ones(len(t["labels"]))} for t in truths]
    metrics, rows, _ = evaluate(truths, perfect, ["a", "b", "c"])
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert [r["ap50"] for r in rows] == pytest.approx([1.0, 1.0, 1.0])
    shifted = [dict(p, boxes=p["boxes"] + 2) for p in perfect]  # IoU 0.66-0.82
    worse, _, _ = evaluate(truths, shifted, ["a", "b", "c"])
    assert worse["map"] < 0.9 and worse["map50"] == pytest.approx(1.0)


# -- end to end -----------------------------------------------------------------------------------


def test_train_smoke_then_predict_boxes_in_image_pixels(run_dlrun, runs, mlflow_client, workdir):
    import tensorflow as tf

    from dlrun.data.detection import load_shapes

    run_dlrun("train", "task=detection", "trainer=smoke", "data.n_train=64", "data.n_val=16", "data.n_test=16")
    run = runs()[0]
    m = run.data.metrics
    for key in ("test/map", "test/map50", "test/map75", "test/ar100", "val/map50",
                "test/images_per_second_batch1", "baseline/untrained_ssd/map50"):
        assert key in m, key
    # dlrun eval scores the logged (served) model on the same test images: the same mAP
    run_dlrun("eval", f"run_id={run.info.run_id}")
    for key in ("test/map", "test/map50"):
        history = [h.value for h in mlflow_client.get_metric_history(run.info.run_id, key)]
        assert len(history) == 2 and history[0] == pytest.approx(history[1], abs=1e-9), key
    photos = workdir / "photos"
    photos.mkdir()
    src = load_shapes(OmegaConf.create({"image_size": 128, "n_train": 1, "n_val": 1, "n_test": 1,
                                        "max_objects": 3, "min_size": 0.2, "max_size": 0.4, "noise": 0.05,
                                        "seed": 0}))
    big = tf.image.resize(src.images[0], (200, 300)).numpy().astype("uint8")  # another size than trained
    tf.io.write_file(str(photos / "a.png"), tf.io.encode_png(big))
    tf.io.write_file(str(photos / "b.png"), tf.io.encode_png(src.images[1]))
    out = workdir / "boxes.csv"
    run_dlrun("predict", f"run_id={run.info.run_id}", "input=photos", f"output={out}")
    import pandas as pd

    frame = pd.read_csv(out)
    assert list(frame.columns) == ["file", "class", "score", "xmin", "ymin", "xmax", "ymax"]
    assert len(frame) > 0 and set(frame["class"]) <= {"circle", "square", "triangle"}
    a = frame[frame["file"].str.endswith("a.png")]
    assert (a["xmax"] <= 300.5).all() and (a["ymax"] <= 200.5).all() and (a["xmin"] >= -0.5).all()
    assert sorted(p.name for p in (workdir / "boxes_annotated").iterdir()) == ["a.png", "b.png"]


def test_ssd_with_a_keras_applications_backbone_builds_offline(det_cfg):
    from dlrun.models.ssd import build_ssd, feature_sizes
    from dlrun.tasks.detection import DetectionInfo, _anchors

    cfg = det_cfg("model.backbone=MobileNetV2", "model.weights=null", "model.image_size=96").model
    info = DetectionInfo(name="x", input_shape=(96, 96, 3), num_classes=2)
    model = build_ssd(cfg, info)
    assert feature_sizes(cfg, 96) == [12, 6, 3, 2]
    assert model.output.shape[1:] == (len(_anchors(det_cfg("model.image_size=96"), info)), 4 + 3)
    with pytest.raises(DlrunError, match="unknown keras.applications model 'MobileNetV9'"):
        build_ssd(det_cfg("model.backbone=MobileNetV9").model, info)


def test_task_data_on_a_voc_csv_with_auto_anchors(tmp_path, det_cfg):
    from dlrun.tasks.detection import DetectionTask, _anchors

    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(8):
        _png(tmp_path / f"p{i}.png", 64, 48)
        rows += [f"p{i}.png,64,48,wide,{2 + i},4,{40 + i},20", f"p{i}.png,64,48,tall,30,10,{40 + i},46"]
    rows.append("p0.png,64,48,tall,10,10,10,30")  # no area: reported, skipped
    (tmp_path / "b.csv").write_text("\n".join(rows) + "\n")
    cfg = det_cfg("data=voc", f"data.path={tmp_path / 'b.csv'}", "model.anchors=auto", "model.image_size=64",
                  "task.split.val_size=0.25", "task.split.test_size=0.25")
    data = DetectionTask().data(cfg, batch_size=2)
    info = data.info
    assert info.sizes == {"test": 2, "val": 2, "train": 4} and info.class_names == ["tall", "wide"]
    assert any("p0.png" in w and "no area" in w for w in data.warnings)
    assert len(info.scales) == 5 and min(info.aspect_ratios) < 0.5 and max(info.aspect_ratios) > 1.5  # tall, wide
    x, y = next(iter(data.train))
    assert x.shape == (2, 64, 64, 3) and y["loc"].shape == (2, len(_anchors(cfg, info)), 4)
    assert int((y["cls"].numpy() > 0).sum()) >= 4  # both boxes of both images matched
    truth = data.examples["test"].targets[0]
    assert truth["width"] == 64 and truth["height"] == 48 and len(truth["boxes"]) == 2


def test_read_and_score_annotated_files_with_a_served_model(tmp_path, det_cfg):
    """`dlrun eval input=<COCO JSON>` path in process: read -> score with pycocotools."""
    from dlrun.tasks.detection import DetectionTask

    cfg = det_cfg("trainer=smoke", "data.n_train=8", "data.n_val=4", "data.n_test=4")
    task = DetectionTask()
    data = task.data(cfg, batch_size=4)
    served = task.serving(cfg, task.build_model(cfg, data.info), data)
    test = data.examples["test"]
    images, annotations = [], []
    for i, (img, t) in enumerate(zip(test.inputs, test.targets, strict=True)):
        _png_array(tmp_path / f"t{i}.png", img)
        images.append({"id": i, "file_name": f"t{i}.png", "width": 128, "height": 128})
        for b, lab in zip(t["boxes"], t["labels"], strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(lab) + 1,
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
    (tmp_path / "true.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    ex = task.read(cfg, str(tmp_path / "true.json"), served)
    assert len(ex) == 4 and ex.targets[0]["labels"].tolist() == test.targets[0]["labels"].tolist()
    report = task.score(cfg, served, ex)
    assert {"map", "map50", "map75", "ar100"} <= set(report.metrics) and "per_class" in report.tables
    assert report.metrics == pytest.approx(task.score(cfg, served, test).metrics)  # same images, same boxes
    cats_swapped = [{"id": 1, "name": "circle"}, {"id": 2, "name": "hexagon"}, {"id": 3, "name": "triangle"}]
    (tmp_path / "bad.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                   "categories": cats_swapped}))
    with pytest.raises(DlrunError, match="hexagon unknown to the model"):
        task.read(cfg, str(tmp_path / "bad.json"), served)


def _png_array(path, img):
    import tensorflow as tf

    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(img, "uint8")))

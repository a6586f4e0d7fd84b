"""Semantic segmentation: IoU/Dice by hand, transposed-convolution sizes, augmentation that moves
the mask with the image, the mask folder and TFDS loaders, and one smoke run with predict/eval."""

from __future__ import annotations

import sys
import types
import zipfile

import numpy as np
import pytest
from conftest import dlrun_inprocess, stderr_line, store_runs
from omegaconf import OmegaConf

from dlrun.errors import DlrunError

# -- metrics --------------------------------------------------------------------------------------

TRUTH = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 1],
                  [0, 2, 2, 0],
                  [0, 2, 2, 0]])
PRED = np.array([[0, 0, 1, 1],
                 [0, 1, 1, 1],
                 [0, 2, 0, 0],
                 [0, 2, 2, 2]])


def test_iou_dice_and_pixel_accuracy_match_a_hand_count():
    from dlrun.metrics import mean_iou, pixel_confusion, segmentation

    cm = pixel_confusion(TRUTH, PRED, 3)
    # rows true, columns predicted: one true 0 became 1 and one became 2, one true 2 became 0
    # class 0: TP 6, 8 true, 7 predicted -> IoU 6 / (8 + 7 - 6), Dice 2*6 / (8 + 7)
    # class 1: TP 4, 4 true, 5 predicted -> IoU 4/5, Dice 8/9
    # class 2: TP 3, 4 true, 4 predicted -> IoU 3/5, Dice 6/8
    assert cm.tolist() == [[6, 1, 1], [0, 4, 0], [1, 0, 3]]
    metrics, rows = segmentation(cm, ["background", "a", "b"])
    assert metrics["iou/background"] == pytest.approx(6 / 9)
    assert metrics["iou/a"] == pytest.approx(4 / 5)
    assert metrics["iou/b"] == pytest.approx(3 / 5)
    assert metrics["mean_iou"] == pytest.approx((6 / 9 + 4 / 5 + 3 / 5) / 3)
    assert metrics["dice"] == pytest.approx((12 / 15 + 8 / 9 + 6 / 8) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(13 / 16)
    assert [r["true_pixels"] for r in rows] == [8, 4, 4] and [r["predicted_pixels"] for r in rows] == [7, 5, 4]
    assert mean_iou(cm) == pytest.approx(metrics["mean_iou"])


def test_a_class_in_neither_truth_nor_prediction_is_left_out_as_keras_does():
    import keras

    from dlrun.metrics import pixel_confusion, segmentation

    metrics, rows = segmentation(pixel_confusion(TRUTH, PRED, 5), ["bg", "a", "b", "c", "d"])
    assert metrics["mean_iou"] == pytest.approx((6 / 9 + 4 / 5 + 3 / 5) / 3)  # classes 3 and 4 never occur
    assert "iou/c" not in metrics and rows[3]["iou"] is None
    keras_iou = keras.metrics.MeanIoU(num_classes=5)
    keras_iou.update_state(TRUTH.ravel(), PRED.ravel())
    assert float(keras_iou.result()) == pytest.approx(metrics["mean_iou"], abs=1e-6)


def test_baselines_majority_and_per_pixel_prior():
    from dlrun.tasks.segmentation import baselines

    train = np.zeros((5, 4, 4), "int32")
    train[:3, :2, :2] = 1  # class 1 owns the top-left corner in 3 of 5 masks: the prior says 1 there
    test = [np.pad(np.ones((4, 4), "int32"), 2)]  # 8x8 with class 1 in the centre: the prior is resized
    out = baselines(train, test, 2)
    assert out["majority"]["pixel_accuracy"] == pytest.approx(48 / 64)  # every pixel class 0
    assert out["majority"]["mean_iou"] == pytest.approx((48 / 64 + 0) / 2)
    # prior: class 1 on the top-left 4x4 of the 8x8 image; it overlaps the centre square by 2x2
    assert out["prior"]["pixel_accuracy"] == pytest.approx((64 - 12 - 12) / 64)
    assert out["prior"]["mean_iou"] == pytest.approx((36 / 60 + 4 / 28) / 2)


# -- transposed convolutions ----------------------------------------------------------------------


@pytest.mark.parametrize("n,kernel,stride", [(2, 4, 2), (4, 16, 8), (3, 3, 2), (5, 64, 32), (7, 1, 1)])
def test_transposed_conv_output_size_formula_and_keras_padding(n, kernel, stride):
    import keras

    from dlrun.models.segmentation import transposed_size

    x = np.zeros((1, n, n, 2), "float32")
    valid = keras.layers.Conv2DTranspose(3, kernel, strides=stride, padding="valid")(x)
    assert valid.shape[1] == transposed_size(n, kernel, stride, 0) == (n - 1) * stride + kernel
    pad = 1 if kernel > 2 else 0  # an explicit pad is a crop of the valid output on each side
    cropped = keras.layers.Cropping2D(pad)(valid)
    assert cropped.shape[1] == transposed_size(n, kernel, stride, pad) == (n - 1) * stride - 2 * pad + kernel
    same = keras.layers.Conv2DTranspose(3, kernel, strides=stride, padding="same")(x)
    assert same.shape[1] == n * stride  # Keras' "same": in x stride, whatever the kernel
    if kernel == 2 * stride:  # FCN's choice: kernel 2s is pad s/2 in the formula, the same size
        assert transposed_size(n, kernel, stride, stride // 2) == n * stride


def test_bilinear_kernel_upsamples_a_ramp_to_a_ramp():
    import keras

    from dlrun.models.segmentation import bilinear_kernel

    ramp = np.tile(np.arange(8, dtype="float32"), (8, 1))[None, ..., None]
    up = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False)
    up.build((None, 8, 8, 1))
    up.set_weights([bilinear_kernel(4, 1)])
    out = np.asarray(up(ramp))[0, 4:-4, 4:-4, 0]  # away from the borders
    steps = np.diff(out, axis=1)
    assert np.allclose(steps, 0.5, atol=1e-5) and np.allclose(np.diff(out, axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize("model,variant", [("fcn", "32s"), ("fcn", "16s"), ("fcn", "8s"), ("unet", None)])
def test_models_answer_a_class_distribution_per_input_pixel(compose, model, variant):
    from dlrun.models import build_model
    from dlrun.tasks.segmentation import SegmentationInfo

    overrides = ["task=segmentation", f"model={model}", "model.filters=[4,8,8]", "model.convs_per_block=1"]
    if variant:
        overrides += [f"model.variant={variant}", "model.fc_filters=8"]
    cfg = compose(*overrides)
    info = SegmentationInfo(name="t", input_shape=(32, 48, 3), target="segmentation", num_classes=5)
    net = build_model(cfg.model, info, task="segmentation")
    out = np.asarray(net(np.random.default_rng(0).random((2, 32, 48, 3), dtype="float32")))
    assert out.shape == (2, 32, 48, 5)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    if variant:
        skips = {"32s": 0, "16s": 1, "8s": 2}[variant]
        assert sum(layer.name.startswith("fuse_") for layer in net.layers) == skips


def test_an_image_size_the_network_cannot_halve_is_one_line(compose):
    from dlrun.models import build_model
    from dlrun.tasks.segmentation import SegmentationInfo

    cfg = compose("task=segmentation")  # five blocks: sides must be multiples of 32
    info = SegmentationInfo(name="t", input_shape=(48, 48, 3), target="segmentation", num_classes=4)
    with pytest.raises(DlrunError, match="divisible by 32"):
        build_model(cfg.model, info, task="segmentation")
    with pytest.raises(DlrunError, match="model.variant: unknown value '4s'"):
        build_model(compose("task=segmentation", "model.variant=4s").model, info, task="segmentation")


# -- augmentation ---------------------------------------------------------------------------------


def _scene_batch(n=8, size=32):
    """Images whose red channel is the mask / 3: a moved mask must still match it pixel for pixel."""
    rng = np.random.default_rng(1)
    masks = np.zeros((n, size, size), "int32")
    for i in range(n):
        y, x = rng.integers(0, size - 10, 2)
        masks[i, y:y + 10, x:x + 6] = 1 + i % 3
        masks[i, 2:5, 20:30] = 3
    images = rng.random((n, size, size, 3), dtype="float32")
    images[..., 0] = masks / 3.0
    return images, masks


def test_augmentation_moves_image_and_mask_identically():
    import tensorflow as tf

    from dlrun.data.masks import augmenter

    images, masks = _scene_batch()
    aug = augmenter({"flip": "horizontal_and_vertical", "zoom": 0.3, "translation": 0.15,
                     "interpolation": "nearest", "fill_mode": "reflect"}, seed=5)
    changed = 0
    for _ in range(3):
        x, y = aug(tf.constant(images), tf.constant(masks))
        x, y = x.numpy(), y.numpy()
        assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1, 2, 3}
        np.testing.assert_array_equal(np.round(x[..., 0] * 3).astype("int32"), y)
        changed += int((y != masks).any(axis=(1, 2)).sum())
    assert changed > 0  # it did move things
    flip = augmenter({"flip": "horizontal"}, seed=0)  # no resampling: exact with the default bilinear too
    x, y = (v.numpy() for v in flip(tf.constant(images), tf.constant(masks)))
    np.testing.assert_array_equal(np.round(x[..., 0] * 3).astype("int32"), y)
    assert augmenter({"flip": "none"}, seed=0) is None
    with pytest.raises(DlrunError, match="task.augment.fill_mode: unknown value 'mirror'"):
        augmenter({"flip": "none", "zoom": 0.1, "fill_mode": "mirror"}, seed=0)


# -- sources --------------------------------------------------------------------------------------


def test_shapes_masks_are_deterministic_and_agree_with_the_boxes():
    from dlrun.data.detection import shapes_scene, shapes_scene_masks
    from dlrun.data.masks import load_shapes_masks

    cfg = OmegaConf.create({"image_size": 48, "n_train": 6, "n_val": 2, "n_test": 2, "max_objects": 3,
                            "min_size": 0.2, "max_size": 0.4, "noise": 0.05, "seed": 3})
    a, b = load_shapes_masks(cfg), load_shapes_masks(cfg)
    assert a.class_names == ["background", "circle", "square", "triangle"]
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert {k: v.tolist() for k, v in a.split.items()} == {"train": list(range(6)), "val": [6, 7], "test": [8, 9]}
    img, boxes, labels, classes = shapes_scene_masks(np.random.default_rng(7), 48, 3, 0.2, 0.4, 0.0)
    img3, boxes3, labels3 = shapes_scene(np.random.default_rng(7), 48, 3, 0.2, 0.4, 0.0)
    assert np.array_equal(img, img3) and np.array_equal(boxes, boxes3)  # detection's scenes are unchanged
    for box, label in zip(boxes, labels, strict=True):  # every visible pixel of a class lies in one of its boxes
        x1, y1, x2, y2 = box.astype(int)
        assert (classes[y1:y2, x1:x2] == label + 1).any()
    for c in np.unique(classes[classes > 0]):
        ys, xs = np.nonzero(classes == c)
        inside = np.zeros(len(ys), bool)
        for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels, strict=True):
            if label + 1 == c:
                inside |= (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        assert inside.all()


def _folder(tmp_path, n=6, colour=False, size=(20, 30)):
    from PIL import Image

    from dlrun.data.masks import palette

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = size if i % 2 == 0 else (size[0] + 4, size[1] - 6)  # two sizes
        mask = np.zeros((h, w), "uint8")
        mask[2:8, 3:12] = 1
        mask[10:14, 5:9] = 2
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.jpg")
        if colour:
            Image.fromarray(palette(3)[mask]).save(root / "masks" / f"im{i}.png")
        elif i % 3 == 0:  # a palette PNG (as VOC's SegmentationClass) and grayscale PNGs: both are indices
            p = Image.fromarray(mask, mode="P")
            p.putpalette(palette(256).ravel().tolist())
            p.save(root / "masks" / f"im{i}.png")
        else:
            Image.fromarray(mask, mode="L").save(root / "masks" / f"im{i}.png")
    return root


def _folder_cfg(root, **extra):
    return OmegaConf.create({"name": "mask_folder", "path": str(root), "images": "images", "masks": "masks",
                             "classes": None, "palette": None, "skip_bad_files": False, **extra})


def test_mask_folder_reads_index_palette_and_colour_masks(tmp_path):
    from dlrun.data.masks import load_mask_folder, palette

    src = load_mask_folder(_folder_cfg(_folder(tmp_path)))
    assert src.class_names == ["background", "1", "2"] and len(src.images) == 6
    assert src.images[1].shape == (24, 24, 3) and src.masks[1].shape == (24, 24)
    assert all(np.array_equal(np.unique(m), [0, 1, 2]) for m in src.masks)
    colour = _folder(tmp_path / "c", colour=True)
    src = load_mask_folder(_folder_cfg(colour, classes=["bg", "cat", "dog"], palette=palette(3).tolist()))
    assert src.class_names == ["bg", "cat", "dog"] and int(src.masks[0][3, 4]) == 1 and int(src.masks[0][11, 6]) == 2
    with pytest.raises(DlrunError, match="a colour mask: give data.palette"):
        load_mask_folder(_folder_cfg(colour))


def test_mask_folder_names_each_kind_of_bad_file_in_one_line(tmp_path):
    from PIL import Image

    from dlrun.data.masks import load_mask_folder, palette

    root = _folder(tmp_path)
    (root / "masks" / "im5.png").unlink()
    with pytest.raises(DlrunError, match=r"im5\.jpg: no mask masks/im5\.png \(fix"):
        load_mask_folder(_folder_cfg(root))
    Image.fromarray(np.zeros((5, 5), "uint8")).save(root / "masks" / "im5.png")
    with pytest.raises(DlrunError, match=r"im5\.png: mask is 5x5, its image 24x24"):
        load_mask_folder(_folder_cfg(root))
    Image.fromarray(np.full((24, 24), 7, "uint8")).save(root / "masks" / "im5.png")
    with pytest.raises(DlrunError, match=r"im5\.png: class index 7, but there are 3 classes"):
        load_mask_folder(_folder_cfg(root, classes=["a", "b", "c"]))
    Image.fromarray(np.full((24, 24), 255, "uint8")).save(root / "masks" / "im5.png")  # VOC's border label
    with pytest.raises(DlrunError, match=r"class indices up to 255 \(e.g. the mask of .*im5\.jpg\)"):
        load_mask_folder(_folder_cfg(root))
    (root / "masks" / "im5.png").write_bytes(b"not a png")
    (root / "masks" / "extra.png").write_bytes(b"")
    with pytest.raises(DlrunError) as e:
        load_mask_folder(_folder_cfg(root))
    assert "(and 1 more bad files)" in e.value.message and "\n" not in e.value.message
    src = load_mask_folder(_folder_cfg(root, skip_bad_files=True))
    assert len(src.images) == 5 and src.warnings[0].startswith("2 bad file(s) skipped")
    colour = _folder(tmp_path / "c", colour=True, n=2)
    odd = palette(3)[np.zeros((20, 30), "uint8")]
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(colour / "masks" / "im0.png")
    with pytest.raises(DlrunError, match=r"1 pixels of colours not in data.palette, e.g. \(1, 2, 3\)"):
        load_mask_folder(_folder_cfg(colour, palette=palette(3).tolist()))
    with pytest.raises(DlrunError, match="images folder .* does not exist"):
        load_mask_folder(_folder_cfg(root, images="pictures"))


def test_tfds_segmentation_without_the_package_is_one_line(monkeypatch, compose):
    import importlib.util

    from dlrun.data.masks import load_tfds_segmentation

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow_datasets" else real(name, *a))
    with pytest.raises(DlrunError, match="data=tfds_segmentation needs the tensorflow-datasets package"):
        load_tfds_segmentation(compose("task=segmentation", "data=tfds_segmentation").data)


def test_tfds_segmentation_maps_trimap_values_to_classes(monkeypatch, compose):
    """tfds.load's dict examples, faked: the pets' trimap values 1/2/3 become pet/background/border."""
    import importlib.util

    import tensorflow as tf

    from dlrun.data.masks import load_tfds_segmentation

    def part(n):
        mask = np.full((n, 10, 14, 1), 2, np.uint8)  # background
        mask[:, 2:6, 3:9] = 1  # pet
        mask[:, 6, 3:9] = 3  # border
        return tf.data.Dataset.from_tensor_slices({"image": np.full((n, 10, 14, 3), 200, np.uint8),
                                                   "segmentation_mask": mask})

    def load(name, split, with_info, data_dir, download):
        return [part(4), part(2), part(3)], types.SimpleNamespace()

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorflow_datasets" else real(name, *a))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=load))
    src = load_tfds_segmentation(compose("task=segmentation", "data=tfds_segmentation",
                                         "data.image_size=[20,28]").data)
    assert src.class_names == ["background", "pet", "border"] and len(src.images) == 9
    assert {k: len(v) for k, v in src.split.items()} == {"train": 4, "val": 2, "test": 3}
    assert src.images[0].shape == (20, 28, 3) and src.masks[0].shape == (20, 28)
    assert src.masks[0][0, 0] == 0 and src.masks[0][6, 10] == 1 and src.masks[0][12, 10] == 2


# -- one smoke run: train, predict, eval -----------------------------------------------------------


def dlrun(folder, *args, expect: int = 0):
    """`dlrun <args>` in process in `folder` (its own store, folder/mlflow.db)."""
    proc = dlrun_inprocess(args, folder)
    assert proc.returncode == expect, f"dlrun {' '.join(map(str, args))}: {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One in-process `dlrun train task=segmentation trainer=smoke` (a small FCN-8s on 32 px shapes
    masks, with FGSM adversarial training), shared by the predict, eval, explain and attack tests."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("seg")
    dlrun(folder, "train", "task=segmentation", "trainer=smoke", "data.n_train=48", "data.n_val=16",
          "data.n_test=16", "data.image_size=32", "trainer.batch_size=16", "model.filters=[8,16,16]",
          "model.convs_per_block=1", "model.fc_filters=16", "task.adversarial.eps=0.03", f"hydra.run.dir={folder}/run")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    (run,) = store_runs(client)
    return types.SimpleNamespace(folder=folder, run=run, client=client)


def test_smoke_run_logs_iou_baselines_and_figures(smoke):
    m = smoke.run.data.metrics
    for key in ("test/mean_iou", "test/pixel_accuracy", "test/dice", "test/iou/background", "val/mean_iou",
                "baseline/majority/mean_iou", "baseline/prior/mean_iou", "baseline/majority/pixel_accuracy"):
        assert key in m, key
    # background is ~80% of the pixels: an all-background answer has pixel accuracy ~0.8 and
    # mean IoU = its background IoU over the 4 classes present
    assert 0.7 < m["baseline/majority/pixel_accuracy"] < 0.95
    assert m["baseline/majority/mean_iou"] == pytest.approx(m["baseline/majority/pixel_accuracy"] / 4, abs=1e-6)
    plots = {a.path for a in smoke.client.list_artifacts(smoke.run.info.run_id, "plots")}
    assert {"plots/overlays.png", "plots/worst.png"} <= plots
    # trained adversarially (the per-pixel loss through the same train step), served as the plain network
    assert smoke.run.data.params["task.adversarial.eps"] == "0.03"
    config = zipfile.ZipFile(smoke.folder / "run" / "served" / "model.keras").read("config.json").decode()
    assert "AdversarialTraining" not in config and '"name": "fcn8s"' in config


def test_predict_writes_masks_and_overlays_at_the_input_size(smoke):
    import pandas as pd
    from PIL import Image

    photos = smoke.folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(photos / "wide.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / "square.jpg")
    out = smoke.folder / "masks"
    dlrun(smoke.folder, "predict", f"run_id={smoke.run.info.run_id}", f"input={photos}", f"output={out}/")
    for stem, (w, h) in (("wide", (70, 50)), ("square", (64, 64))):
        mask, over = Image.open(out / f"{stem}.png"), Image.open(out / f"{stem}_overlay.png")
        assert mask.mode == "P" and mask.size == (w, h) and over.size == (w, h) and over.mode == "RGB"
        assert np.asarray(mask).max() < 4
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(table["height"]) == [50, 64] and "fraction_background" in table
    np.testing.assert_allclose(table[[c for c in table if c.startswith("fraction_")]].sum(axis=1), 1.0, atol=1e-3)


def test_eval_repeats_the_test_numbers_and_scores_a_mask_folder(smoke, tmp_path):
    from PIL import Image

    from dlrun import serving
    from dlrun.data.masks import load_shapes_masks
    from dlrun.registry import TASKS

    run_id = smoke.run.info.run_id
    dlrun(smoke.folder, "eval", f"run_id={run_id}")
    root = tmp_path / "labelled"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    src = load_shapes_masks(OmegaConf.create({"image_size": 64, "n_train": 1, "n_val": 1, "n_test": 3,
                                              "max_objects": 3, "min_size": 0.2, "max_size": 0.4,
                                              "noise": 0.05, "seed": 9}))
    for i in (2, 3, 4):
        Image.fromarray(src.images[i]).save(root / "images" / f"s{i}.png")
        Image.fromarray(src.masks[i], mode="L").save(root / "masks" / f"s{i}.png")
    dlrun(smoke.folder, "eval", f"run_id={run_id}", f"input={root}")
    run = smoke.client.get_run(run_id)
    assert run.data.metrics["test/mean_iou"] == pytest.approx(smoke.run.data.metrics["test/mean_iou"], abs=1e-6)
    assert "eval/labelled/mean_iou" in run.data.metrics
    # the contract's score (what attack and explain use) on the same folder gives the same number
    task = TASKS.get("segmentation")()
    served = serving.load(smoke.client.download_artifacts(run_id, "served", str(tmp_path)))
    examples = task.read(OmegaConf.create({"data": {}}), str(root), served)
    assert examples.inputs.shape == (3, 64, 64, 3) and examples.targets.shape == (3, 64, 64)
    report = task.score(OmegaConf.create({}), served, examples)
    assert report.metrics["mean_iou"] == pytest.approx(run.data.metrics["eval/labelled/mean_iou"], abs=1e-6)
    proba = np.asarray(served.model(examples.inputs[:1])["probability"])
    assert proba.shape == (1, 64, 64, 4)


def test_mask_folder_errors_reach_the_user_as_one_line(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "im3.png").unlink()
    proc = dlrun(tmp_path, "train", "task=segmentation", "data=mask_folder", f"data.path={root}", "tracking=off",
                 f"hydra.run.dir={tmp_path}/run", expect=2)
    assert "im3.jpg: no mask masks/im3.png" in stderr_line(proc)


def test_object_iou_pools_the_non_background_classes():
    from dlrun.metrics import object_iou, pixel_confusion

    # objects: class 1 TP 4 (union 5), class 2 TP 3 (union 5) -> 7 / 10
    assert object_iou(pixel_confusion(TRUTH, PRED, 3)) == pytest.approx(7 / 10)
    assert object_iou(pixel_confusion(np.zeros((3, 3)), np.zeros((3, 3)), 3)) == 1.0


# -- dlrun explain and dlrun attack on a segmentation network -------------------------------------


def red_segmenter():
    """A network whose answer is known: a pixel is an object (class 1) where its red channel
    exceeds 0.5 (logit 20 (red - 0.5) against 0), through a 1x1 'features' layer that copies the
    channels (Grad-CAM's layer: the one before the scores)."""
    import keras

    image = keras.Input((16, 16, 3), name="image")
    features = keras.layers.Conv2D(3, 1, name="features")
    score = keras.layers.Conv2D(2, 1, name="score")
    logits = score(features(image))
    features.set_weights([np.eye(3, dtype="float32")[None, None], np.zeros(3, "float32")])
    score.set_weights([np.array([[0, 20], [0, 0], [0, 0]], "float32")[None, None], np.array([0, -10], "float32")])
    return keras.Model(image, keras.layers.Activation("softmax", name="output")(logits), name="red_net")


def served_segmenter(network, scale=1 / 255):
    """A served model as SegmentationTask.serving builds it: raw pixels of any size -> resize ->
    rescale -> network -> probabilities at the input's size, and the mask."""
    import keras

    from dlrun.contract import Served
    from dlrun.models._segmentation_layers import ResizeLike

    raw = keras.Input(shape=(None, None, 3), name="image")
    x = keras.layers.Rescaling(scale, name="scale")(keras.layers.Resizing(16, 16, name="resize")(raw))
    proba = ResizeLike(name="to_input_size")(network(x), raw)
    mask = keras.ops.cast(keras.ops.argmax(proba, axis=-1), "int32")
    model = keras.Model(raw, {"mask": mask, "probability": proba}, name="served_red")
    return Served(model, output_columns={"probability": ["background", "red"]},
                  meta={"scale": scale, "class_names": ["background", "red"]})


def red_scenes(n=6, seed=0):
    """Images in [0, 1] with a red square (red 0.55-0.8) on a background whose red is 0.2-0.45,
    and their masks: the red square is class 1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 16, 16, 3)).astype("float32")
    x[..., 0] = rng.uniform(0.2, 0.45, (n, 16, 16))
    masks = np.zeros((n, 16, 16), "int64")
    for i in range(n):
        r, c = rng.integers(0, 11, size=2)
        x[i, r:r + 5, c:c + 5, 0] = rng.uniform(0.55, 0.8, (5, 5))
        masks[i, r:r + 5, c:c + 5] = 1
    return x, masks


def test_segmentation_heat_maps_cover_the_explained_object_and_pass_the_deletion_test():
    from dlrun.explain import heatmaps
    from dlrun.explain.options import read
    from dlrun.tasks._segmentation_lens import SegmentationLens

    lens = SegmentationLens(served_segmenter(red_segmenter()))
    x, masks = red_scenes()
    p = lens.predict(x)
    assert p.shape == (6, 16, 16, 2) and np.array_equal(lens.answers(p), masks)  # the net is right
    regions = lens.classes("predicted", p)
    assert np.array_equal(regions, np.where(masks == 1, 1, -1)) and lens.last_conv() == "features"
    assert lens.titles(regions[:1], p[:1])[0].startswith("red 0.")
    opts = read("explain", {"fraction": "0.05"})
    for make in (heatmaps.gradcam_maps, heatmaps.saliency_maps):
        maps = make(lens, x, regions, opts)
        inside = (maps * masks).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
        outside = (maps * (1 - masks)).sum(axis=(1, 2)) / (1 - masks).sum(axis=(1, 2))
        assert (inside > 2 * outside).all(), (make.__name__, inside, outside)
    # deleting the map's top 5 % (12 of the 25 red pixels) to black: those pixels turn background,
    # so the mean p(red) over the fixed region halves; 12 random pixels hit ~1 red pixel of 25
    drop, random_drop = heatmaps.deletion_test(lens, x, regions, maps, 0.05, 0.0, seed=0)
    assert drop == pytest.approx(12 / 25, abs=0.03) and random_drop < 0.15


def test_attacks_lower_the_mean_iou_as_eps_grows():
    from dlrun.explain.attack import fgsm_attack, pgd_attack
    from dlrun.explain.options import read
    from dlrun.tasks._segmentation_lens import SegmentationLens

    lens = SegmentationLens(served_segmenter(red_segmenter()))
    x, masks = red_scenes()
    opts = read("attack", {"eps": "0,0.05,0.12,0.3", "grid": "2"})
    fg, pg = (attack(lens, x, masks, opts).metrics for attack in (fgsm_attack, pgd_attack))
    curve = [fg[f"fgsm/eps_{e}/mean_iou"] for e in ("0", "0.05", "0.12", "0.3")]
    # every red value is at least 0.05 from the 0.5 threshold: eps 0.05 may flip the nearest pixels
    # only, 0.3 flips them all (background 0, object 0)
    assert curve[0] == 1.0 and curve[0] >= curve[1] > curve[2] > curve[3] == 0.0, curve
    assert all(pg[f"pgd/eps_{e}/mean_iou"] <= fg[f"fgsm/eps_{e}/mean_iou"] + 1e-9 for e in ("0.05", "0.12"))


def test_explain_and_attack_a_segmentation_run(smoke):
    run_id, folder = smoke.run.info.run_id, smoke.folder
    dlrun(folder, "explain", f"run_id={run_id}", "method=gradcam,occlusion,filters", "images=3",
          "deletion_images=8", f"output={folder}/explained")
    dlrun(folder, "attack", f"run_id={run_id}", "method=fgsm", "eps=0,0.1", "grid=2", f"output={folder}/attacked")
    after = smoke.client.get_run(run_id)
    m = after.data.metrics
    assert {"explain/gradcam/deletion_drop", "explain/occlusion/deletion_drop", "explain/random/deletion_drop"} <= set(m)
    assert m["attack/clean/mean_iou"] == pytest.approx(smoke.run.data.metrics["test/mean_iou"], abs=1e-3)
    assert m["attack/fgsm/eps_0/mean_iou"] == m["attack/clean/mean_iou"]
    assert m["test/mean_iou"] == smoke.run.data.metrics["test/mean_iou"] and after.info.status == "FINISHED"
    assert (folder / "explained" / "gradcam" / "heatmaps.png").exists()
    assert (folder / "attacked" / "fgsm" / "examples.png").exists()
    proc = dlrun(folder, "explain", f"run_id={run_id}", "method=tsne", expect=2)
    assert "method=tsne does not apply to task 'segmentation'" in stderr_line(proc)
    proc = dlrun(folder, "attack", f"run_id={run_id}", f"input={_folder(folder / 'mixed')}", expect=2)
    assert "the images have several sizes" in stderr_line(proc)

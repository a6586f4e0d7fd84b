"""Image task: sources (digits, synthetic shapes, folder, keras.datasets, TFDS), the input
pipeline and augmentation, models (cnn, resnet, keras_app), presets, the report, and
`dlrun train task=cnn|image` end to end."""

from __future__ import annotations

import gzip
import socket
import sys
import time
import types

import numpy as np
import pytest
from omegaconf import OmegaConf

from dlrun.config import validate
from dlrun.data import images as I
from dlrun.errors import DlrunError
from dlrun.registry import DATA, MODELS, TASKS
from dlrun.tasks.base import DataInfo

PRESETS = ("cnn", "vgg", "mnist_mlp", "transfer")
IMAGE_DATA = ("digits", "synthetic_shapes", "mnist", "fashion_mnist", "cifar10", "cifar100", "folder", "tfds")


@pytest.fixture
def image_cfg(compose):
    """image_cfg(*overrides) -> a validated image config (smoke trainer, tracking off)."""

    def make(*overrides):
        return validate(compose("task=cnn", "trainer=smoke", "tracking=off", *overrides))

    return make


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Keras cache (empty KERAS_HOME) and no name resolution: every download fails at once."""
    import keras.src.backend.config as keras_config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return home


def image_data(cfg, batch_size):
    from dlrun.tasks.image import ImageTask

    return ImageTask().data(cfg, batch_size)


def info_of(shape, classes=10):
    return DataInfo(name="t", input_shape=tuple(shape), target="multiclass", num_classes=classes)


def model_cfg(name, **kw):
    from dlrun.config_tree import config_dir

    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    return OmegaConf.merge(cfg, kw)


# -- names ---------------------------------------------------------------------------------


def test_registered_names():
    from dlrun.tasks.image import ImageTask

    assert TASKS.get("cnn") is ImageTask and TASKS.canonical("image") == "image"
    assert set(IMAGE_DATA) <= {e.name for e in DATA.entries() if "image" in e.tags}
    assert {"cnn", "resnet", "keras_app", "mlp"} <= {e.name for e in MODELS.entries() if "image" in e.tags}


def test_task_cnn_and_task_image_compose_the_same(compose):
    a, b = compose("task=cnn"), compose("task=image")
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)
    assert (a.task.name, a.model.name, a.data.name) == ("image", "cnn", "digits")


def test_tabular_data_does_not_fit_the_image_task(image_cfg):
    with pytest.raises(DlrunError, match="does not fit task 'image'"):
        image_data(image_cfg("data=insurance"), 32)


# -- embedded sources ----------------------------------------------------------------------


def test_digits_splits_shapes_determinism_and_balance(image_cfg):
    cfg = image_cfg("trainer.smoke=false", "trainer.fast=false")
    a, b = image_data(cfg, 32), image_data(cfg, 32)
    assert a.info.input_shape == (8, 8, 1) and a.info.num_classes == 10 and a.info.target == "multiclass"
    assert a.info.sizes == {"train": 1149, "val": 288, "test": 360}
    assert sum(a.info.sizes.values()) == 1797
    for k, v in a.arrays.items():
        assert np.array_equal(v, b.arrays[k]), k
    x = a.arrays["x_train"]
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() == pytest.approx(1.0)
    counts = np.bincount(a.arrays["y_test"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    xb, yb = next(iter(a.test))
    assert xb.shape == (32, 8, 8, 1) and yb.dtype.name == "int64"
    up = image_data(image_cfg("data.upsample=2"), 32)
    assert up.info.input_shape == (16, 16, 1)
    fast = image_data(image_cfg(), 32)
    assert fast.info.sizes == {"train": 128, "val": 128, "test": 128}  # trainer.fast_examples per split


def test_synthetic_shapes_deterministic_balanced_rgb():
    x, y = I.synthetic_shapes(n=300, size=24, seed=3)
    x2, y2 = I.synthetic_shapes(n=300, size=24, seed=3)
    x3, _ = I.synthetic_shapes(n=300, size=24, seed=4)
    assert x.shape == (300, 24, 24, 3) and x.dtype == np.float32 and y.shape == (300,)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and not np.array_equal(x, x3)
    assert np.bincount(y).tolist() == [100, 100, 100]
    assert x.min() >= 0.0 and x.max() <= 1.0
    # noise-free shapes: the shape covers a plausible fraction of the image for each class
    clean, labels = I.synthetic_shapes(n=30, size=32, noise=0.0, seed=0)
    corners = clean[:, :1, :1, :]
    covered = (np.abs(clean - corners).sum(-1) > 1e-6).mean(axis=(1, 2))
    for c in range(3):
        assert 0.02 < covered[labels == c].mean() < 0.6
    with pytest.raises(DlrunError, match="min_size"):
        I.synthetic_shapes(n=10, min_size=0.6, max_size=0.7)


def test_synthetic_shapes_source_through_the_task(image_cfg):
    data = image_data(image_cfg("data=synthetic_shapes", "data.n_samples=120", "data.image_size=16",
                                  "trainer.smoke=false", "trainer.fast=false"), 16)
    assert data.info.input_shape == (16, 16, 3) and data.info.class_names == ["circle", "square", "triangle"]
    assert sum(data.info.sizes.values()) == 120


# -- folder, keras.datasets, tfds ------------------------------------------------------------


def _write_tree(root, per_class=10, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (rng.uniform(0, 60, (size, size + 4, 3))).astype(np.uint8)
            img[..., channel] = 200 + i
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_folder_loader_on_a_tiny_png_tree(tmp_path, image_cfg):
    _write_tree(tmp_path / "imgs")
    cfg = image_cfg("data=folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=[8,8]",
                    "data.validation_split=0.2", "data.test_split=0.2", "trainer.smoke=false", "trainer.fast=false")
    data = image_data(cfg, 4)
    assert data.info.class_names == ["blue", "red"] and data.info.input_shape == (8, 8, 3)
    assert data.info.sizes == {"train": 12, "val": 4, "test": 4}
    seen = {}
    for split in ("train", "val", "test"):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in getattr(data, split)], strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert len(y) == data.info.sizes[split] and x.min() >= 0.0 and x.max() <= 1.0
        # the class is the bright channel: blue images have channel 2 high, red ones channel 0
        assert np.array_equal(y, (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype(int))
        seen[split] = {tuple(np.round(im.ravel()[:12], 4)) for im in x}
    assert not seen["val"] & seen["test"] and not seen["train"] & seen["test"]  # disjoint splits
    gray = image_data(image_cfg("data=folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=[8,8]",
                                  "data.color_mode=grayscale"), 4)
    assert gray.info.input_shape == (8, 8, 1)
    with pytest.raises(DlrunError, match="no such directory"):
        image_data(image_cfg("data=folder", f"data.path={tmp_path / 'missing'}"), 4)
    with pytest.raises(DlrunError, match="needs data.path"):
        image_data(image_cfg("data=folder"), 4)


def test_keras_dataset_offline_is_a_fast_one_line_error(offline, image_cfg):
    start = time.perf_counter()
    with pytest.raises(DlrunError, match="mnist") as err:
        image_data(image_cfg("data=mnist"), 32)
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value) and "no network" in str(err.value)


def test_keras_dataset_from_the_cache(offline, image_cfg):
    """Fashion-MNIST files in the Keras cache are read without the network (keras checks no hash)."""
    folder = offline / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        labels, imgs = np.arange(n, dtype=np.uint8) % 10, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + imgs.tobytes())
    data = image_data(image_cfg("data=fashion_mnist", "data.n_train=40", "trainer.smoke=false", "trainer.fast=false"), 8)
    assert data.info.input_shape == (28, 28, 1) and data.info.class_names[0] == "T-shirt/top"
    assert data.info.sizes == {"train": 32, "val": 8, "test": 20}


def test_tfds_without_the_package_is_a_clear_error(image_cfg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow_datasets" else real(name, *a))
    with pytest.raises(DlrunError, match="tensorflow-datasets"):
        image_data(image_cfg("data=tfds", "data.dataset=beans"), 8)


def test_tfds_glue_with_a_stand_in_module(image_cfg, monkeypatch):
    """tfds.load's (dataset, info) contract, faked: splits, class names, resizing."""
    import importlib.util

    import tensorflow as tf

    calls = {}

    def load(name, split, as_supervised, with_info, data_dir, download):
        calls.update(name=name, split=split)
        parts = [tf.data.Dataset.from_tensor_slices((np.full((n, 10, 10, 3), 255, np.uint8), np.arange(n) % 3))
                 for n in (12, 6, 6)]
        info = types.SimpleNamespace(
            features={"label": types.SimpleNamespace(names=["a", "b", "c"], num_classes=3)},
            splits={s: types.SimpleNamespace(num_examples=n) for s, n in zip(split, (12, 6, 6), strict=True)})
        return parts, info

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorflow_datasets" else real(name, *a))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=load))
    data = image_data(image_cfg("data=tfds", "data.dataset=fake", "data.image_size=[6,6]",
                                  "trainer.smoke=false", "trainer.fast=false"), 4)
    assert calls["name"] == "fake" and calls["split"][0] == "train[:80%]"
    assert data.info.class_names == ["a", "b", "c"] and data.info.input_shape == (6, 6, 3)
    assert data.info.sizes == {"train": 12, "val": 6, "test": 6}
    x, _ = next(iter(data.test))
    assert np.allclose(x.numpy(), 1.0)


# -- pipeline ------------------------------------------------------------------------------


def test_augmentation_is_active_in_training_only(image_cfg):
    base = ("task.shuffle_buffer=1", "data.upsample=2")  # buffer 1: the train order is kept
    plain = image_data(image_cfg(*base), 16)
    aug = image_data(image_cfg(*base, "task.augment.rotation=0.1", "task.augment.zoom=0.1",
                                 "task.augment.translation=0.1", "task.augment.contrast=0.2",
                                 "task.augment.flip=horizontal"), 16)
    first = aug.arrays["x_train"][:16]
    x0 = next(iter(plain.train))[0].numpy()
    assert np.array_equal(x0, first)
    e1, e2 = next(iter(aug.train))[0].numpy(), next(iter(aug.train))[0].numpy()
    assert not np.allclose(e1, first) and not np.allclose(e1, e2)  # changed, and anew each epoch
    for split in ("val", "test"):
        xs = next(iter(getattr(aug, split)))[0].numpy()
        assert np.array_equal(xs, aug.arrays[f"x_{split}"][:16])
    with pytest.raises(DlrunError, match="flip"):
        image_data(image_cfg("task.augment.flip=diagonal"), 16)


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [("cnn", (8, 8, 1)), ("resnet", (16, 16, 3)), ("mlp", (8, 8, 1))])
def test_cnn_resnet_mlp_output_shape(name, shape):
    from dlrun.models import build_model

    extra = {"hidden_units": [16]} if name == "mlp" else {}
    model = build_model(model_cfg(name, **extra), info_of(shape, 7), task="image")
    out = model(np.zeros((2, *shape), np.float32))
    assert tuple(out.shape) == (2, 7) and np.allclose(np.asarray(out).sum(1), 1.0, atol=1e-5)


def test_cnn_options_and_resnet_depth():
    from dlrun.models import build_model

    vgg = build_model(model_cfg("cnn", filters=[8, 16, 32, 64], convs_per_block=2, batch_norm=True, dropout=0.2),
                      info_of((8, 8, 1)), task="image")
    names = [layer.name for layer in vgg.layers]
    assert "block0_bn1" in names and "block2_dropout" in names
    assert "block3_pool" not in names  # 8 -> 4 -> 2 -> 1: no pooling past one pixel
    deep = build_model(model_cfg("resnet", filters=[8, 16, 32], blocks_per_stage=3), info_of((16, 16, 3)),
                       task="image")
    convs = [layer for layer in deep.layers if layer.__class__.__name__ == "Conv2D" and "proj" not in layer.name]
    assert len(convs) + 1 == 20  # ResNet-20: 19 convolutions + the dense head
    with pytest.raises(DlrunError, match="pooling"):
        build_model(model_cfg("cnn", pooling="median"), info_of((8, 8, 1)), task="image")


def test_keras_app_builds_with_random_weights_and_reloads(tmp_path):
    import keras

    from dlrun.models import build_model

    cfg = model_cfg("keras_app", application="MobileNetV2", app_kwargs={"alpha": 0.35}, dense_units=[8])
    model = build_model(cfg, info_of((8, 8, 1), 5), task="image")
    names = {layer.name: layer for layer in model.layers}
    assert names["resize"].output.shape[1:3] == (32, 32)  # resized to the app's minimum size
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert not base.trainable and names["head"].trainable
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 5)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")  # built-in layers only: no custom objects
    assert np.allclose(again.predict(x, verbose=0), y, atol=1e-5)
    tuned = build_model(model_cfg("keras_app", application="MobileNetV2", app_kwargs={"alpha": 0.35},
                                  fine_tune_from_layer="block_16_expand"), info_of((32, 32, 3), 5), task="image")
    base = next(layer for layer in tuned.layers if isinstance(layer, keras.Model))
    flags = {layer.name: layer.trainable for layer in base.layers}
    assert flags["block_16_expand"] and not flags["block_15_expand"]
    with pytest.raises(DlrunError, match="did you mean 'MobileNetV2'"):
        build_model(model_cfg("keras_app", application="MobileNetV9"), info_of((32, 32, 3)), task="image")


@pytest.mark.parametrize("app", ["VGG16", "MobileNetV2", "DenseNet121", "EfficientNetB0"])
def test_keras_app_preprocessing_is_the_apps_own(app):
    """The frozen 1x1 conv reproduces the app's preprocess_input (caffe/BGR, tf, torch, identity)."""
    import keras

    fn = getattr(keras.applications, app)
    module = {"VGG16": "vgg16", "MobileNetV2": "mobilenet_v2", "DenseNet121": "densenet",
              "EfficientNetB0": "efficientnet"}[app]
    from dlrun.models.image import preprocess_affine

    M, b = preprocess_affine(fn)
    x = np.random.default_rng(0).uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    expected = np.asarray(getattr(keras.applications, module).preprocess_input(x.copy()))
    assert np.allclose(x @ M + b, expected, atol=1e-3)


def test_keras_app_imagenet_offline_is_a_one_line_error(offline):
    from dlrun.models import build_model

    cfg = model_cfg("keras_app", application="MobileNetV2", weights="imagenet", app_kwargs={"alpha": 0.35})
    start = time.perf_counter()
    with pytest.raises(DlrunError, match="ImageNet weights for MobileNetV2") as err:
        build_model(cfg, info_of((96, 96, 3)), task="image")
    assert time.perf_counter() - start < 20 and "\n" not in str(err.value)


# -- presets and report --------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_builds(preset, compose):
    import keras

    from dlrun.models import build_model

    cfg = validate(compose(f"experiment={preset}", "tracking=off"))
    assert cfg.task.name == "image" and cfg.data.name == "digits"
    size = 8 * int(cfg.data.get("upsample", 1))
    shape = tuple(cfg.data.image_size or (size, size)) + (1,)
    model = build_model(cfg.model, info_of(shape), task="image")
    assert model.output.shape[-1] == 10
    if preset == "mnist_mlp":
        assert model.count_params() == 420_260 and cfg.trainer.optimizer == "adadelta"
    keras.backend.clear_session()


def test_evaluate_report(image_cfg, tmp_path):

    from dlrun.tasks.image import ImageTask

    task = ImageTask()
    cfg = image_cfg("task.misclassified=6")
    data = task.data(cfg, 32)
    model = task.build_model(cfg, data.info)
    model.fit(data.train, epochs=1, verbose=0)
    served = task.serving(cfg, model, data)
    report = task.evaluate(cfg, served, data)
    assert report.primary == "test/accuracy"
    assert {"test/accuracy", "test/top3_accuracy", "test/loss", "test/precision_macro"} <= set(report.metrics)
    assert report.metrics["test/top3_accuracy"] >= report.metrics["test/accuracy"]
    assert {r["class"] for r in report.tables["per_class"]} == {str(i) for i in range(10)}
    assert set(report.figures) == {"confusion_matrix.png", "misclassified.png"}
    report.figures["misclassified.png"].savefig(tmp_path / "m.png")
    from dlrun import serving

    serving.save(served, tmp_path / "served", "image")  # dlrun eval: a reloaded model gives the same report
    again = task.evaluate(cfg, serving.load(tmp_path / "served"), data)
    assert again.metrics["test/accuracy"] == pytest.approx(report.metrics["test/accuracy"])
    shapes = image_cfg("data=synthetic_shapes", "data.n_samples=90")
    data = task.data(shapes, 16)
    report = task.evaluate(shapes, task.serving(shapes, task.build_model(shapes, data.info), data), data)
    assert "test/top3_accuracy" not in report.metrics  # 3 classes: no top-k


# -- whole runs, in process ------------------------------------------------------------------

RUNS = {
    "shapes": ("train", "task=image", "data=synthetic_shapes", "trainer=smoke"),
    "mirrored": ("train", "task=cnn", "trainer=smoke", "strategy=mirrored", "strategy.cpu_replicas=2"),
}


@pytest.fixture(scope="module")
def smoke(shared_run, tmp_path_factory):
    """smoke(key) -> (run, MlflowClient): the shared cnn smoke run, or one of RUNS trained once
    for this module in its own folder and store."""
    from conftest import dlrun_inprocess, store_runs
    from mlflow.tracking import MlflowClient

    done = {}

    def result(key):
        if key == "cnn":
            shared = shared_run("cnn")
            run, client = shared.client.get_run(shared.run.info.run_id), shared.client
        elif key not in done:
            folder = tmp_path_factory.mktemp(f"image_{key}")
            proc = dlrun_inprocess(RUNS[key], folder)
            assert proc.returncode == 0, f"dlrun {' '.join(RUNS[key])} exited {proc.returncode}\n{proc.stderr[-4000:]}"
            client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
            (run,) = store_runs(client)
            done[key] = run, client
        run, client = done.get(key, (run, client))
        assert run.info.status == "FINISHED"
        m = run.data.metrics
        assert {"test/accuracy", "test/loss", "val/loss", "train/loss"} <= set(m)
        assert m.get("test/top3_accuracy", 1.0) >= m["test/accuracy"]  # top-3 contains the top-1 answer
        return run, client

    return result


def test_train_task_cnn_smoke(smoke):
    run, client = smoke("cnn")
    params = run.data.params
    assert (params["task.name"], params["model.name"], params["data.name"]) == ("image", "cnn", "digits")
    assert "test/top3_accuracy" in run.data.metrics
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/misclassified.png"} <= plots


def test_train_synthetic_shapes_smoke(smoke):
    run, _ = smoke("shapes")
    assert run.data.params["data.name"] == "synthetic_shapes"
    assert "test/top3_accuracy" not in run.data.metrics  # 3 classes: no top-k


def test_train_task_cnn_mirrored_two_cpu_replicas(smoke):
    run, _ = smoke("mirrored")
    assert run.data.params["strategy.replicas"] == "2"
    assert run.data.tags["dlrun.strategy"] == "MirroredStrategy"


def test_file_cache_is_one_file_per_split(image_cfg, tmp_path):
    """TF reuses an existing cache file as is: one shared path would hand val/test the train images."""
    cache = tmp_path / "cache"
    data = image_data(image_cfg(f"data.cache={cache}", "trainer.smoke=false", "trainer.fast=false"), 64)
    for ds in (data.train, data.val):  # write the train (and val) cache first
        for _ in ds:
            pass
    train_x = np.concatenate([np.asarray(x) for x, _ in data.train])
    test_x = np.concatenate([np.asarray(x) for x, _ in data.test])
    assert len(test_x) == data.info.sizes["test"] != len(train_x)
    assert sorted(p.name.split(".")[1] for p in tmp_path.glob("cache.*.index")) == ["test", "train", "val"]

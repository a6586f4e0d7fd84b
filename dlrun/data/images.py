"""Image data sources and the image input pipeline (course Day 2, images).

Sources, each a DATA entry tagged "image" that takes the `data` config and returns `Images`:
  digits            scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; offline default)
  synthetic_shapes  generated colour circles, squares and triangles on noisy backgrounds
  mnist, fashion_mnist, cifar10, cifar100   keras.datasets (downloaded once, then cached)
  folder            a directory of class sub-folders (keras.utils.image_dataset_from_directory)
  tfds              any TensorFlow Datasets image classification set (needs tensorflow-datasets)

`The helpers below (split_arrays, to_model_input, pipeline, augmentation) take explicit arguments;
the image task (tasks/image.py) assembles its `Data` from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlrun.download import downloading
from dlrun.errors import DlrunError
from dlrun.registry import DATA

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
    "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm"
]
CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2"
]
SHAPES = ["circle", "square", "triangle"]


@dataclass
class Images:
    """What a source returns: in-memory arrays or unbatched tf.data splits, plus class names.

    arrays: numpy images (N, H, W, C) and integer labels under x/y (all data, split later) or
    x_train/y_train/x_test/y_test (a source's own test split); pixel values times `scale` lie in
    [0, 1]. datasets: unbatched tf.data splits of (float32 image in [0, 1], int label) under
    train/val/test, with their sizes.
    """

    class_names: list[str]
    source: str
    arrays: dict[str, Any] | None = None
    scale: float = 1.0 / 255
    datasets: dict[str, Any] | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # shown, and logged as a run tag


def _keras_dataset(name: str, data_cfg) -> tuple:
    import keras

    loader = getattr(keras.datasets, name)
    kwargs = {"label_mode": data_cfg.label_mode} if name == "cifar100" else {}
    hint = "it is cached under $KERAS_HOME/datasets (~/.keras) after one online run; data=digits works offline"
    with downloading(f"data set '{name}' (keras.datasets.{name})", data_cfg.download_timeout, hint):
        (x_train, y_train), (x_test, y_test) = loader.load_data(**kwargs)
    return x_train, y_train.ravel().astype("int64"), x_test, y_test.ravel().astype("int64")


def _keras_images(name: str, data_cfg, class_names: list[str]) -> Images:
    import numpy as np

    x_train, y_train, x_test, y_test = _keras_dataset(name, data_cfg)
    if x_train.ndim == 3:  # grayscale: add the channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for split in ("train", "test"):  # optional deterministic subsets (the course used 3,000 MNIST images)
        n = data_cfg.get(f"n_{split}")
        if n and n < len(arrays[f"y_{split}"]):
            idx = np.sort(np.random.default_rng(int(data_cfg.seed)).choice(
                len(arrays[f"y_{split}"]), int(n), replace=False))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][idx], arrays[f"y_{split}"][idx]
    return Images(class_names, f"keras.datasets.{name}", arrays=arrays, scale=1.0 / 255)


# ---------------------------------------------------------------------------------------------
# Sources


@DATA.register("digits", "scikit-learn's bundled 8x8 digits: 1,797 images, 10 classes (offline)",
               tags=("image",))
def load_digits(data_cfg) -> Images:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images[..., None].astype("float32")  # (1797, 8, 8, 1), values 0..16
    factor = int(data_cfg.upsample or 1)
    if factor < 1:
        raise DlrunError(f"data.upsample must be an integer >= 1, got {data_cfg.upsample}")
    if factor > 1:  # digits-only knob: presets can enlarge digits without resizing other data sets
        x = resize(x, (8 * factor, 8 * factor))
    return Images([str(c) for c in bunch.target_names], "sklearn.datasets.load_digits",
                  arrays={"x": x, "y": bunch.target.astype("int64")}, scale=1.0 / 16)


@DATA.register("synthetic_shapes", "Generated colour circles, squares and triangles on noisy backgrounds",
               tags=("image",))
def load_synthetic_shapes(data_cfg) -> Images:
    side = max(image_size(data_cfg.image_size) or (32, 32))  # a non-square size is resized later
    x, y = synthetic_shapes(
        n=int(data_cfg.n_samples), size=side, noise=float(data_cfg.noise),
        min_size=float(data_cfg.min_size), max_size=float(data_cfg.max_size), seed=int(data_cfg.seed),
    )
    spec = f"synthetic_shapes(n={len(y)}, size={side}, seed={data_cfg.seed})"
    return Images(list(SHAPES), spec, arrays={"x": x, "y": y}, scale=1.0)


def synthetic_shapes(n: int, size: int = 32, noise: float = 0.1, min_size: float = 0.2,
                     max_size: float = 0.4, seed: int = 0):
    """n float32 RGB images (n, size, size, 3) in [0, 1] and balanced labels (0 circle, 1 square,
    2 triangle). Each image: a random background colour plus Gaussian noise, one shape of a random
    colour, centre and half-width (min_size..max_size of the side). Same seed, same images."""
    import numpy as np

    if n < 1 or size < 8:
        raise DlrunError(f"synthetic_shapes needs n_samples >= 1 and image_size >= 8, got {n} and {size}")
    if not 0 < min_size <= max_size <= 0.5:
        raise DlrunError(f"synthetic_shapes needs 0 < min_size <= max_size <= 0.5, got {min_size}, {max_size}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(SHAPES)).astype("int64")
    r = rng.uniform(min_size, max_size, n) * size  # half-width in pixels
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    bg = rng.uniform(0.0, 1.0, (n, 3))
    fg = (bg + rng.uniform(0.35, 0.65, (n, 3)) * rng.choice([-1, 1], (n, 3))) % 1.0  # contrast to bg
    yy, xx = np.mgrid[0:size, 0:size].astype("float32") + 0.5
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    rr = r[:, None, None]
    circle = dx**2 + dy**2 <= rr**2
    square = (np.abs(dx) <= rr * 0.85) & (np.abs(dy) <= rr * 0.85)
    # upright triangle: apex at (0, -r), base at y = +r spanning x in [-r, r]
    triangle = (dy <= rr) & (np.abs(dx) <= (dy + rr) / 2)
    mask = np.where((y == 0)[:, None, None], circle, np.where((y == 1)[:, None, None], square, triangle))
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
    img = img + rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0.0, 1.0).astype("float32"), y


@DATA.register("mnist", "MNIST handwritten digits, 28x28x1, 10 classes (keras.datasets)", tags=("image",))
def load_mnist(data_cfg) -> Images:
    return _keras_images("mnist", data_cfg, [str(i) for i in range(10)])


@DATA.register("fashion_mnist", "Fashion-MNIST clothing, 28x28x1, 10 classes (keras.datasets)",
               tags=("image",))
def load_fashion_mnist(data_cfg) -> Images:
    return _keras_images("fashion_mnist", data_cfg, FASHION_MNIST_CLASSES)


@DATA.register("cifar10", "CIFAR-10, 32x32x3, 10 classes (keras.datasets)", tags=("image",))
def load_cifar10(data_cfg) -> Images:
    return _keras_images("cifar10", data_cfg, CIFAR10_CLASSES)


@DATA.register("cifar100", "CIFAR-100, 32x32x3, 100 fine or 20 coarse classes (keras.datasets)",
               tags=("image",))
def load_cifar100(data_cfg) -> Images:
    mode = data_cfg.label_mode
    if mode not in ("fine", "coarse"):
        raise DlrunError(f"data.label_mode: unknown value '{mode}'", "valid: fine, coarse")
    return _keras_images("cifar100", data_cfg, CIFAR100_FINE if mode == "fine" else CIFAR100_COARSE)


@DATA.register("folder", "A directory of class sub-folders of images (image_dataset_from_directory)",
               tags=("image",))
def load_folder(data_cfg) -> Images:
    """Train/validation/test from `path`; test from `test_path` when given, else held out of `path`."""
    import os

    path = _required(data_cfg, "path", "data.path=/path/to/images")
    if not os.path.isdir(path):
        raise DlrunError(f"data.path: no such directory '{path}'", "a folder with one sub-folder per class")
    val, test = float(data_cfg.validation_split), float(data_cfg.test_split)
    test_path = data_cfg.get("test_path")
    if test_path and not os.path.isdir(str(test_path)):
        raise DlrunError(f"data.test_path: no such directory '{test_path}'")
    held_out = val + (0.0 if test_path else test)
    if not 0 < held_out < 1 or (not test_path and test <= 0):
        raise DlrunError(f"data.validation_split + data.test_split must lie in (0, 1) with both > 0, "
                         f"got {val} and {test}")
    size = image_size(data_cfg.get("image_size"))
    if size is None:
        raise DlrunError("data=folder needs data.image_size: [height, width] (every image is resized to it)")
    kwargs = dict(image_size=size, color_mode=str(data_cfg.color_mode),
                  batch_size=None, label_mode="int", seed=int(data_cfg.seed))
    try:
        train, rest = _from_directory(path, validation_split=held_out, subset="both", shuffle=True, **kwargs)
    except ValueError as e:
        raise DlrunError(f"data.path '{path}': {str(e).splitlines()[0]}") from None
    names = list(train.class_names)
    test_ds = _from_directory(str(test_path), shuffle=False, class_names=names, **kwargs) if test_path else None
    every = train.file_paths + rest.file_paths + (test_ds.file_paths if test_ds is not None else [])
    bad = unreadable(every)
    if bad and not data_cfg.skip_bad_files:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DlrunError(f"{bad[0][0]}: not a readable image ({bad[0][1]}){more}",
                         "fix or remove it, or set data.skip_bad_files=true")
    bad_set = {f for f, _ in bad}

    def good(ds, files):  # decoding fails on exactly the bad files: drop them before splitting
        return (ds.ignore_errors() if bad_set & set(files) else ds), [f for f in files if f not in bad_set]

    train, train_files = good(train, train.file_paths)
    rest, rest_files = good(rest, rest.file_paths)
    if test_ds is not None:
        test_ds, test_files = good(test_ds, test_ds.file_paths)
        val_ds, n_val, n_test = rest, len(rest_files), len(test_files)
    else:  # the held-out files come unshuffled and in a fixed order: split them once more
        n_val = max(1, round(len(rest_files) * val / held_out))
        n_test = len(rest_files) - n_val
        if n_test < 1:
            raise DlrunError(f"data.path '{path}': too few images to hold out a test split", "raise data.test_split")
        val_ds, test_ds = rest.take(n_val), rest.skip(n_val)
    datasets = {k: ds.map(_rescale) for k, ds in (("train", train), ("val", val_ds), ("test", test_ds))}
    sizes = {"train": len(train_files), "val": n_val, "test": n_test}
    warnings = [f"{len(bad)} unreadable image(s) skipped: " + ", ".join(f for f, _ in bad[:5])
                + (" ..." if len(bad) > 5 else "")] if bad else []
    return Images(names, os.path.abspath(path), datasets=datasets, sizes=sizes, warnings=warnings)


def image_files(source: str, suffixes) -> list:
    """The image files a user names for eval/predict: one file, or every file with one of
    `suffixes` under a folder (sorted); a missing path or an empty folder is one line."""
    from pathlib import Path

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    elif path.is_file():
        files = [path]
    else:
        raise DlrunError(f"input '{source}' does not exist")
    if not files:
        raise DlrunError(f"input '{source}' holds no images", f"looked for {', '.join(suffixes)}")
    return files


def same_size_batches(images, batch: int) -> list[list[int]]:
    """Indices of `images` (arrays of any sizes) in groups of at most `batch` of one shape: a
    served model that takes any size still takes one size per call."""
    import itertools

    import numpy as np

    order = sorted(range(len(images)), key=lambda i: np.shape(images[i]))
    groups = []
    for _, same in itertools.groupby(order, key=lambda i: np.shape(images[i])):
        same = list(same)
        groups += [same[j:j + batch] for j in range(0, len(same), batch)]
    return groups


def unreadable(files: list[str]) -> list[tuple[str, str]]:
    """(file, problem) for each file that is not a readable image. Pillow's verify() checks the
    file's structure (PNG chunk checksums, truncation) without decoding the pixels, so even a
    large folder is checked in seconds; TensorFlow's decoder would fail mid-training without
    naming the file."""
    from PIL import Image

    bad = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.verify()
        except Exception as e:  # Pillow raises many kinds (OSError, SyntaxError, ValueError)
            bad.append((f, str(e).splitlines()[0][:120] if str(e) else type(e).__name__))
    return bad


def _required(data_cfg, key: str, example: str) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(data_cfg, key) or data_cfg.get(key) in (None, ""):
        raise DlrunError(f"data={data_cfg.name} needs data.{key}", f"e.g. {example}")
    return str(data_cfg.get(key))


def _rescale(x, y):
    return x / 255.0, y


def _from_directory(path, **kwargs):
    import keras

    return keras.utils.image_dataset_from_directory(path, verbose=False, **kwargs)


@DATA.register("tfds", "A TensorFlow Datasets image classification set by name (needs tensorflow-datasets)",
               tags=("image",))
def load_tfds(data_cfg) -> Images:
    import tensorflow as tf

    from dlrun.download import require_tfds, tfds_load

    tfds = require_tfds("tfds", "data=folder, mnist or cifar10")
    name = _required(data_cfg, "dataset", "data.dataset=tf_flowers")
    splits = [str(data_cfg.train_split), str(data_cfg.val_split), str(data_cfg.test_split)]
    parts, info = tfds_load(tfds, data_cfg, name, splits, as_supervised=True)
    label = info.features[str(data_cfg.label_key)]
    names = list(getattr(label, "names", None) or [str(i) for i in range(int(label.num_classes))])
    size = image_size(data_cfg.get("image_size"))

    def prepare(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        if size:
            x = tf.image.resize(x, size)
        return x, tf.cast(y, tf.int64)

    datasets = dict(zip(("train", "val", "test"), (p.map(prepare) for p in parts), strict=True))
    sizes = {k: int(info.splits[s].num_examples) for k, s in zip(("train", "val", "test"), splits, strict=True)}
    return Images(names, f"tfds:{name}", datasets=datasets, sizes=sizes)


# ---------------------------------------------------------------------------------------------
# Pipeline


def augmentation(aug_cfg, seed: int = 0):
    """A keras.Sequential of random preprocessing layers from task.augment, or None when all are off."""
    import keras

    if not aug_cfg:
        return None
    layers = []
    flip = aug_cfg.get("flip") or "none"
    if flip not in ("none", "horizontal", "vertical", "horizontal_and_vertical"):
        raise DlrunError(f"task.augment.flip: unknown value '{flip}'",
                         "valid: none, horizontal, vertical, horizontal_and_vertical")
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if aug_cfg.get("rotation"):
        layers.append(keras.layers.RandomRotation(float(aug_cfg.rotation), fill_mode="nearest", seed=seed + 1))
    if aug_cfg.get("zoom"):
        layers.append(keras.layers.RandomZoom(float(aug_cfg.zoom), fill_mode="nearest", seed=seed + 2))
    if aug_cfg.get("translation"):
        t = float(aug_cfg.translation)
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="nearest", seed=seed + 3))
    if aug_cfg.get("contrast"):
        layers.append(keras.layers.RandomContrast(float(aug_cfg.contrast), value_range=(0, 1), seed=seed + 4))
    return keras.Sequential(layers, name="augmentation") if layers else None


def image_size(value) -> tuple[int, int] | None:
    """A data.image_size value (null, n or [height, width]) as (height, width) or None."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    size = tuple(int(d) for d in value)
    if len(size) != 2 or min(size) < 1:
        raise DlrunError(f"data.image_size must be null, n or [height, width], got {value}")
    return size


def resize(x, size, chunk: int = 4096):
    """Numpy images (N, H, W, C) -> float32 (N, *size, C), bilinear, in chunks to bound memory."""
    import numpy as np
    import tensorflow as tf

    size = tuple(int(d) for d in size)
    if len(x) == 0:
        return np.zeros((0, *size, x.shape[-1]), "float32")
    return np.concatenate([tf.image.resize(x[i:i + chunk], size).numpy() for i in range(0, len(x), chunk)])


def to_model_input(x, scale: float, size=None):
    """Numpy images -> float32 in [0, 1], resized to `size` (h, w) when given."""
    import numpy as np

    x = x.astype("float32") * np.float32(scale)
    if size and tuple(size) != tuple(x.shape[1:3]):
        x = resize(x, size)
    return np.clip(x, 0.0, 1.0)


def pipeline(ds, batch_size: int, training: bool = False, seed: int = 0, augment=None, cache=True,
             shuffle_buffer: int = 10_000, pairs: bool = False):
    """Unbatched (image, label) dataset -> cache -> shuffle (training) -> batch -> augment (training)
    -> prefetch. Augmentation only ever touches the training split."""
    import tensorflow as tf

    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:  # pairs: augment(x, y) moves both (segmentation masks)
        step = augment if pairs else (lambda x, y: (augment(x, training=True), y))
        ds = ds.map(step, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_arrays(a: dict, split_cfg) -> dict:
    """x/y (or x_train/y_train + x_test/y_test) -> x_/y_ train/val/test, stratified by label."""
    import numpy as np

    from dlrun.data.pipeline import split_indices

    stratify = bool(split_cfg.get("stratify", True))
    if "x" in a:
        tr, va, te = split_indices(len(a["y"]), a["y"], split_cfg, stratify)
        x, y, x_te, y_te = a["x"], a["y"], a["x"][te], a["y"][te]
    else:  # the source's own test split: the last rows of the label array, train/val split only
        labels = np.concatenate([a["y_train"], a["y_test"]])
        tr, va, _ = split_indices(len(labels), labels, split_cfg, stratify, test_rows=len(a["y_test"]))
        x, y, x_te, y_te = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    return {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va], "x_test": x_te, "y_test": y_te}


def load_images(data_cfg) -> Images:
    """Look up the data source by data.name and check it serves images."""
    return DATA.for_task(data_cfg.name, "image").obj(data_cfg)

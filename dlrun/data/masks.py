"""Semantic segmentation data: images with a class index per pixel (course "Segmentation").

Sources, each a DATA entry tagged "segmentation" that takes the `data` config and returns `Masks`:
  shapes_masks       generated scenes of circles, squares and triangles on textured backgrounds
                     (the detection generator's scenes, dlrun/data/detection.py, with their
                     per-pixel class maps; background is class 0; offline default)
  mask_folder        images/ and masks/ folders with the same file stems; masks are PNGs of class
                     indices (grayscale or palette PNGs, as Pascal VOC writes them) or colour
                     PNGs mapped through data.palette
  tfds_segmentation  a TensorFlow Datasets segmentation set (oxford_iiit_pet by default), when
                     tensorflow-datasets is installed

Every source returns uint8 images (H, W, C) and uint8 masks (H, W) of the same height and
width; sizes may differ between images. The task (tasks/segmentation.py) resizes them for the
network (bilinear for images, nearest for masks) and scores the served model at each image's
own size. `augmenter` builds the augmentation that moves image and mask together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.csv import FileOptions
from dlrun.data.detection import IMAGE_SUFFIXES
from dlrun.errors import DlrunError
from dlrun.registry import DATA

MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")  # lossless only: JPEG changes class values at edges
MAX_UNNAMED_CLASSES = 64  # more classes than this need data.classes (guards against masks that are not indices)


@dataclass
class Masks:
    """Images (uint8 HxWxC) with their class masks (uint8 HxW, values < len(class_names))."""

    images: list
    masks: list
    class_names: list[str]
    source: str
    files: list[str] = field(default_factory=list)
    split: dict[str, Any] | None = None  # the source's own split: name -> indices
    warnings: list[str] = field(default_factory=list)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours, one per class: the Pascal VOC colour map (class 0 black), so mask
    PNGs written by dlrun look like VOC's. VOC defines it by interleaving the bits of the class
    index into R, G and B; no library exposes it, hence these few lines."""
    out = np.zeros((n, 3), dtype="uint8")
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[k] = (r, g, b)
    return out


def overlay(image, mask, n_classes: int, alpha: float = 0.6, dim: float = 1.0) -> np.ndarray:
    """uint8 RGB picture: the image with every non-background pixel tinted in its class colour
    (`alpha` of the colour) and the background pixels' brightness times `dim`."""
    img = np.asarray(image)
    img = img.astype("float32") / 255.0 if img.dtype == np.uint8 or img.max() > 1.0 else img.astype("float32")
    if img.ndim == 2 or img.shape[-1] == 1:
        img = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=-1)
    colours = palette(max(int(n_classes), int(np.max(mask)) + 1)).astype("float32") / 255.0
    mask = np.asarray(mask)
    tinted = (1 - alpha) * img[..., :3] + alpha * colours[mask]
    out = np.where((mask > 0)[..., None], tinted, dim * img[..., :3])
    return (np.clip(out, 0.0, 1.0) * 255).round().astype("uint8")


def write_mask_png(path: Path, mask, n_classes: int) -> None:
    """A palette PNG: pixel values are the class indices, shown in the VOC colours."""
    from PIL import Image

    img = Image.fromarray(np.asarray(mask, dtype="uint8"), mode="P")
    img.putpalette(palette(max(int(n_classes), 256)).ravel().tolist())
    img.save(path)


# -- shapes_masks -------------------------------------------------------------------------------


@DATA.register("shapes_masks", "Generated circles, squares and triangles on textured backgrounds with "
               "per-pixel class masks (offline)", tags=("segmentation",))
def load_shapes_masks(data_cfg) -> Masks:
    from dlrun.data.detection import SHAPES, shapes_scene_masks

    size = int(max(_size(data_cfg.image_size)))
    n = {s: int(data_cfg[f"n_{s}"]) for s in ("train", "val", "test")}
    lo, hi = float(data_cfg.min_size), float(data_cfg.max_size)
    if size < 16 or not 0 < lo <= hi <= 0.9 or int(data_cfg.max_objects) < 1 or min(n.values()) < 1:
        raise DlrunError("data=shapes_masks needs image_size >= 16, 0 < min_size <= max_size <= 0.9, "
                         f"max_objects >= 1 and n_train/n_val/n_test >= 1 (got {size}, {lo}, {hi}, "
                         f"{data_cfg.max_objects}, {n})")
    images, masks, split, start = [], [], {}, 0
    for i, s in enumerate(("train", "val", "test")):  # one stream per split: sizes change no other split
        rng = np.random.default_rng([int(data_cfg.seed), i])
        for _ in range(n[s]):
            img, _, _, classes = shapes_scene_masks(rng, size, int(data_cfg.max_objects), lo, hi,
                                                    float(data_cfg.noise))
            images.append(img)
            masks.append(classes)
        split[s] = np.arange(start, start + n[s])
        start += n[s]
    spec = f"dlrun:shapes_masks?size={size}&n={n['train']},{n['val']},{n['test']}&seed={data_cfg.seed}"
    return Masks(images, masks, ["background", *SHAPES], spec, split=split)


def _size(value) -> tuple[int, int]:
    from dlrun.data.images import image_size

    size = image_size(value)
    if size is None:
        raise DlrunError("data.image_size is required for segmentation: the network's [height, width]")
    return size


# -- mask_folder --------------------------------------------------------------------------------


def pair_files(images_dir: Path, masks_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(image, mask) pairs with the same stem, and (file, problem) for files without a partner."""
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in MASK_SUFFIXES}
    bad = [(str(images[s]), f"no mask {masks_dir.name}/{s}.png") for s in images if s not in masks]
    bad += [(str(masks[s]), f"no image named {s} in {images_dir.name}/") for s in masks if s not in images]
    return [(images[s], masks[s]) for s in images if s in masks], bad


def read_mask(path: Path, colours: np.ndarray | None, n_classes: int | None, image_hw) -> tuple:
    """(mask uint8 HxW, None) or (None, problem). Grayscale and palette PNGs hold class indices;
    colour PNGs are mapped through `colours` (one RGB row per class)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            colour = im.mode in ("RGB", "RGBA", "CMYK", "YCbCr")
            arr = np.asarray(im.convert("RGB") if colour else im.convert("L") if im.mode == "LA" else im)
    except Exception as e:  # Pillow raises many kinds (OSError, SyntaxError, ValueError)
        return None, f"not a readable mask ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    if arr.shape[:2] != tuple(image_hw):
        return None, f"mask is {arr.shape[1]}x{arr.shape[0]}, its image {image_hw[1]}x{image_hw[0]}"
    if arr.ndim == 3:
        if colours is None:
            return None, "a colour mask: give data.palette (one [r, g, b] per class) or class-index PNGs"
        codes = arr[..., 0].astype("int64") << 16 | arr[..., 1].astype("int64") << 8 | arr[..., 2]
        table = colours[:, 0].astype("int64") << 16 | colours[:, 1].astype("int64") << 8 | colours[:, 2]
        order = np.argsort(table)
        pos = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
        known = table[order][pos] == codes
        if not known.all():
            y, x = np.argwhere(~known)[0]
            return None, f"{int((~known).sum())} pixels of colours not in data.palette, e.g. {tuple(int(v) for v in arr[y, x])}"
        return order[pos].astype("uint8"), None
    arr = arr.astype("int64")
    if n_classes is not None and arr.max() >= n_classes:
        return None, f"class index {int(arr.max())}, but there are {n_classes} classes (data.classes)"
    if arr.min() < 0 or arr.max() > 255:
        return None, f"class indices must lie in 0..255, got {int(arr.min())}..{int(arr.max())}"
    return arr.astype("uint8"), None


def read_folder(images_dir: Path, masks_dir: Path, data_cfg, n_classes: int | None = None) -> Masks:
    """Every (image, mask) pair of the two folders; bad files (no partner, unreadable, another
    size, unknown class values or colours) stop with one line naming the first, or are left out
    with a warning when data.skip_bad_files is true."""
    from dlrun.data.detection import read_image

    for what, d in (("images", images_dir), ("masks", masks_dir)):
        if not d.is_dir():
            raise DlrunError(f"{what} folder '{d}' does not exist",
                             "data.path needs images/ and masks/ sub-folders (or set data.images and data.masks)")
    pairs, bad = pair_files(images_dir, masks_dir)
    classes = list(data_cfg.get("classes") or [])
    colours = data_cfg.get("palette")
    if colours is not None:
        colours = np.asarray([list(c) for c in colours], dtype="int64")
        if colours.ndim != 2 or colours.shape[1] != 3 or colours.min() < 0 or colours.max() > 255:
            raise DlrunError("data.palette must be a list of [r, g, b] colours (0..255), one per class")
        if classes and len(classes) != len(colours):
            raise DlrunError(f"data.palette has {len(colours)} colours for {len(classes)} data.classes")
    n_classes = n_classes or (len(classes) or (len(colours) if colours is not None else None))
    images, masks, files = [], [], []
    for image_path, mask_path in pairs:
        try:
            img = read_image(image_path)
        except DlrunError as e:
            bad.append((str(image_path), e.message.split(": ", 1)[-1]))
            continue
        mask, why = read_mask(mask_path, colours, n_classes, img.shape[:2])
        if why:
            bad.append((str(mask_path), why))
            continue
        images.append(img)
        masks.append(mask)
        files.append(str(image_path))
    if bad and not FileOptions.of(data_cfg).skip_bad_files:
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise DlrunError(f"{bad[0][0]}: {bad[0][1]}{more}", "fix or remove them, or set data.skip_bad_files=true")
    if not images:
        raise DlrunError(f"no image with a mask in '{images_dir}' and '{masks_dir}'",
                         f"images ({', '.join(IMAGE_SUFFIXES)}) and masks ({', '.join(MASK_SUFFIXES)}) "
                         "with the same file stems")
    if not classes:
        k = n_classes or int(max(int(m.max()) for m in masks)) + 1
        if k > MAX_UNNAMED_CLASSES:  # VOC's 255 border label, or grayscale pictures rather than class indices
            worst = files[int(np.argmax([m.max() for m in masks]))]
            raise DlrunError(f"masks hold class indices up to {k - 1} (e.g. the mask of {worst}): more than "
                             f"{MAX_UNNAMED_CLASSES} classes without data.classes",
                             "name the classes (data.classes=[background,...]); an ignore label such as VOC's "
                             "255 is not supported")
        classes = ["background", *(str(i) for i in range(1, max(k, 2)))]
    warnings = [f"{len(bad)} bad file(s) skipped: " + "; ".join(f"{f}: {w}" for f, w in bad[:3])
                + (" ..." if len(bad) > 3 else "")] if bad else []
    return Masks(images, masks, [str(c) for c in classes], str(images_dir.parent.resolve()), files=files,
                 warnings=warnings)


@DATA.register("mask_folder", "images/ and masks/ folders with the same stems (class-index or palette PNG masks)",
               tags=("segmentation",))
def load_mask_folder(data_cfg) -> Masks:
    path = data_cfg.get("path")
    if path in (None, "", "???"):
        raise DlrunError("data=mask_folder needs data.path", "a folder with images/ and masks/ sub-folders")
    root = Path(str(path))
    if not root.is_dir():
        raise DlrunError(f"data.path: no such directory '{root}'", "a folder with images/ and masks/ sub-folders")
    images = root / str(data_cfg.get("images") or "images")
    masks = root / str(data_cfg.get("masks") or "masks")
    return read_folder(images, masks, data_cfg)


# -- tfds_segmentation --------------------------------------------------------------------------


@DATA.register("tfds_segmentation", "A TensorFlow Datasets segmentation set (oxford_iiit_pet; needs "
               "tensorflow-datasets)", tags=("segmentation",))
def load_tfds_segmentation(data_cfg) -> Masks:
    """Images and masks of a TFDS set, resized to data.image_size as they are read (the pets set's
    7,349 images at full size would not fit in memory); raw mask values become class indices
    through data.class_values (class i is raw value class_values[i])."""
    import tensorflow as tf

    from dlrun.download import require_tfds, tfds_load

    tfds = require_tfds("tfds_segmentation", "data=mask_folder or shapes_masks")
    name = str(data_cfg.dataset)
    classes = [str(c) for c in data_cfg.classes]
    values = [int(v) for v in data_cfg.class_values]
    if len(values) != len(classes):
        raise DlrunError(f"data.class_values has {len(values)} values for {len(classes)} data.classes")
    splits = [str(data_cfg.train_split), str(data_cfg.val_split), str(data_cfg.test_split)]
    parts, _ = tfds_load(tfds, data_cfg, name, splits)
    size = _size(data_cfg.image_size)
    lookup = np.full(256, 255, dtype="uint8")
    lookup[values] = np.arange(len(values), dtype="uint8")
    image_key, mask_key = str(data_cfg.image_key), str(data_cfg.mask_key)
    limit = data_cfg.get("max_examples")
    images, masks, split, start = [], [], {}, 0
    for s, part in zip(("train", "val", "test"), parts, strict=True):
        count = 0
        for ex in part.take(int(limit)) if limit else part:
            img = tf.image.resize(ex[image_key], size).numpy().round().clip(0, 255).astype("uint8")
            raw = tf.image.resize(ex[mask_key], size, method="nearest").numpy().astype("int64")[..., 0]
            mask = lookup[raw]
            if (mask == 255).any():
                bad = sorted(set(np.unique(raw[mask == 255]).tolist()))
                raise DlrunError(f"tfds data set '{name}': mask values {bad} are not in data.class_values {values}")
            images.append(img)
            masks.append(mask)
            count += 1
        split[s] = np.arange(start, start + count)
        start += count
    return Masks(images, masks, classes, f"tfds:{name}", split=split)


# -- augmentation -------------------------------------------------------------------------------


def augmenter(aug_cfg, seed: int):
    """(images, masks) -> (images, masks) on a batch, moved by the same random flip, zoom and
    translation (Keras preprocessing layers called with {"images", "segmentation_masks"}: each
    draws one transformation and applies it to both, nearest-neighbour for the masks); or None
    when everything is off. Masks travel as float32 (B, H, W, 1)."""
    import keras

    if not aug_cfg:
        return None
    flip = str(aug_cfg.get("flip") or "none")
    if flip not in ("none", "horizontal", "vertical", "horizontal_and_vertical"):
        raise DlrunError(f"task.augment.flip: unknown value '{flip}'",
                         "valid: none, horizontal, vertical, horizontal_and_vertical")
    interpolation = str(aug_cfg.get("interpolation", "bilinear"))
    fill = str(aug_cfg.get("fill_mode", "reflect"))
    for key, value, valid in (("interpolation", interpolation, ("bilinear", "nearest")),
                              ("fill_mode", fill, ("reflect", "wrap", "nearest", "constant"))):
        if value not in valid:
            raise DlrunError(f"task.augment.{key}: unknown value '{value}'", f"valid: {', '.join(valid)}")
    layers = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    zoom = float(aug_cfg.get("zoom") or 0.0)
    if zoom:  # a negative factor zooms in (a random crop scaled up), a positive one out
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode=fill, interpolation=interpolation,
                                              seed=seed + 1))
    shift = float(aug_cfg.get("translation") or 0.0)
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode=fill, interpolation=interpolation,
                                                     seed=seed + 2))
    if not layers:
        return None

    def apply(images, masks):
        import tensorflow as tf

        data = {"images": images, "segmentation_masks": tf.cast(masks[..., None], tf.float32)}
        for layer in layers:
            data = layer(data, training=True)
        return data["images"], tf.cast(tf.round(data["segmentation_masks"][..., 0]), masks.dtype)

    return apply

"""Object detection data: images with labelled boxes (course "Detection").

Sources, each a DATA entry tagged "detection" that takes the `data` config and returns a `DetectionSet`:
  shapes   generated scenes of 1-6 circles, squares and triangles (exact boxes; offline default)
  coco     a COCO-format annotations JSON and its image folder
  voc      Pascal VOC XML annotations and their JPEG folder, or one CSV of
           filename,width,height,class,xmin,ymin,xmax,ymax rows (a common export)
  tfds_detection  a TensorFlow Datasets detection set by name (voc/2007, coco/2017), when
           tensorflow-datasets is installed

Boxes are pixel corners (xmin, ymin, xmax, ymax) of the image as stored. Every box is checked
(inside the image, positive area): `on_bad_box: skip` drops it and reports it by file in the
run's warnings, `error` stops with the first one. What the model trains on (arrays, the
augmentation and the tf.data pipeline) is dlrun/detection/pipeline.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import DlrunError
from dlrun.registry import DATA

SHAPES = ["circle", "square", "triangle"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class DetectionSet:
    """Images (uint8 HxWx3 arrays, any sizes) with their boxes (n, 4) pixel xyxy and labels (n,)."""

    images: list
    boxes: list
    labels: list
    class_names: list[str]
    source: str
    files: list[str] = field(default_factory=list)
    split: dict[str, Any] | None = None  # the source's own split: name -> indices
    warnings: list[str] = field(default_factory=list)  # bad annotations, by file


# -- validation ---------------------------------------------------------------------------------


def check_box(box, width: int, height: int) -> str | None:
    """Why a pixel xyxy box is bad for an image of width x height, or None."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        return "not a number"
    if x2 <= x1 or y2 <= y1:
        return f"no area ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    tol = 1.0  # one pixel of slack: exports often write xmax = width
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return f"outside the {width}x{height} image ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    return None


def _keep_good(name: str, boxes, labels, width: int, height: int, policy: str, warnings: list):
    good_b, good_l = [], []
    for box, label in zip(boxes, labels, strict=False):
        why = check_box(box, width, height)
        if why is None:
            good_b.append([min(max(float(box[0]), 0), width), min(max(float(box[1]), 0), height),
                           min(max(float(box[2]), 0), width), min(max(float(box[3]), 0), height)])
            good_l.append(int(label))
        elif policy == "error":
            raise DlrunError(f"{name}: bad box {why}", "fix the annotation or set data.on_bad_box=skip")
        else:
            warnings.append(f"{name}: skipped a bad box: {why}")
    return np.asarray(good_b, dtype="float32").reshape(-1, 4), np.asarray(good_l, dtype="int64")


def _policy(data_cfg) -> str:
    policy = str(data_cfg.on_bad_box)
    if policy not in ("skip", "error"):
        raise DlrunError(f"data.on_bad_box: unknown value '{policy}'", "valid: skip, error")
    return policy


# -- shapes -------------------------------------------------------------------------------------


def shapes_scene(rng, size: int, max_objects: int, min_size: float, max_size: float, noise: float):
    """One image (size, size, 3) uint8 with 1..max_objects shapes; (image, boxes, labels).

    Background: a random colour, a random sinusoidal texture and Gaussian noise. Each shape has
    a random class, colour and box side (min_size..max_size of the image side); a new shape may
    overlap earlier ones partially (at most 40% of the smaller box) and is drawn over them. Boxes are the exact
    pixel extent of the shape's full mask.
    """
    return shapes_scene_masks(rng, size, max_objects, min_size, max_size, noise)[:3]


def shapes_scene_masks(rng, size: int, max_objects: int, min_size: float, max_size: float, noise: float):
    """`shapes_scene` plus its per-pixel class map (size, size) uint8: 0 background, label + 1
    where a shape is visible (a later shape covers an earlier one, as drawn). The same rng
    draws give the same scene as `shapes_scene`."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float32") + 0.5
    bg = rng.uniform(0.1, 0.9, 3)
    freq, angle, amp = rng.uniform(2, 10), rng.uniform(0, np.pi), rng.uniform(0.05, 0.2)
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) / size)
    img = bg[None, None, :] + amp * wave[..., None] * rng.choice([-1, 1], 3)[None, None, :]
    boxes, labels, colours = [], [], []
    classes = np.zeros((size, size), dtype="uint8")
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(30 * n):
        if len(boxes) == n:
            break
        label = int(rng.integers(len(SHAPES)))
        side = rng.uniform(min_size, max_size) * size
        r = side / 2
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
        dx, dy = xx - cx, yy - cy
        if label == 0:
            mask = dx**2 + dy**2 <= r**2
        elif label == 1:
            mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:  # upright triangle: apex at the top, base at the bottom
            mask = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
        if mask.sum() < 12:
            continue
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype="float32")
        if boxes and _overlap_np(box, np.asarray(boxes)).max() > 0.4:
            continue
        for _ in range(10):  # contrast to the background and to the shapes drawn so far
            colour = (bg + rng.uniform(0.3, 0.6, 3) * rng.choice([-1, 1], 3)) % 1.0
            if all(np.abs(colour - c).sum() > 0.5 for c in colours):
                break
        colours.append(colour)
        img = np.where(mask[..., None], colour[None, None, :], img)
        classes[mask] = label + 1
        boxes.append(box)
        labels.append(label)
    img = img + rng.normal(0.0, noise, img.shape)
    img = (np.clip(img, 0.0, 1.0) * 255).round().astype("uint8")
    return img, np.asarray(boxes, dtype="float32").reshape(-1, 4), np.asarray(labels, dtype="int64"), classes


def _overlap_np(box, others):
    """Intersection over the smaller box's area: > 0.4 would hide too much of one shape."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.minimum(area(box), area(others))


@DATA.register("shapes", "Generated scenes of 1-6 circles, squares and triangles with exact boxes (offline)",
               tags=("detection",))
def load_shapes(data_cfg) -> DetectionSet:
    size = int(data_cfg.image_size)
    n = {s: int(data_cfg[f"n_{s}"]) for s in ("train", "val", "test")}
    lo, hi = float(data_cfg.min_size), float(data_cfg.max_size)
    if size < 32 or not 0 < lo <= hi <= 0.9 or int(data_cfg.max_objects) < 1 or min(n.values()) < 1:
        raise DlrunError("data=shapes needs image_size >= 32, 0 < min_size <= max_size <= 0.9, "
                         f"max_objects >= 1 and n_train/n_val/n_test >= 1 (got {size}, {lo}, {hi}, "
                         f"{data_cfg.max_objects}, {n})")
    images, boxes, labels, split, start = [], [], [], {}, 0
    for i, s in enumerate(("train", "val", "test")):  # one stream per split: sizes change no other split
        rng = np.random.default_rng([int(data_cfg.seed), i])
        for _ in range(n[s]):
            img, b, lab = shapes_scene(rng, size, int(data_cfg.max_objects), lo, hi, float(data_cfg.noise))
            images.append(img)
            boxes.append(b)
            labels.append(lab)
        split[s] = np.arange(start, start + n[s])
        start += n[s]
    spec = f"dlrun:shapes?size={size}&n={n['train']},{n['val']},{n['test']}&seed={data_cfg.seed}"
    return DetectionSet(images, boxes, labels, list(SHAPES), spec, split=split)


# -- files --------------------------------------------------------------------------------------


def read_image(path: Path):
    import tensorflow as tf

    try:
        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        raise DlrunError(f"{path}: not a readable image ({str(e).splitlines()[0][:120]})") from None
    return img.numpy()


def _required_path(data_cfg, key: str, hint: str) -> Path:
    value = data_cfg.get(key)
    if value in (None, "", "???"):
        raise DlrunError(f"data.{key} is required for data={data_cfg.name}", hint)
    path = Path(str(value))
    if not path.exists():
        raise DlrunError(f"data.{key}: '{path}' does not exist")
    return path


def _assemble(records, class_names, source: str, policy: str, warnings: list) -> DetectionSet:
    """records: (file, width or None, height or None, boxes, class indices) per image."""
    images, boxes, labels, files = [], [], [], []
    for path, width, height, b, lab in records:
        if not Path(path).is_file():
            raise DlrunError(f"{path}: image file not found (named in the annotations)")
        img = read_image(Path(path))
        h, w = img.shape[:2]
        if (width and int(width) != w) or (height and int(height) != h):
            warnings.append(f"{path}: annotated size {width}x{height} differs from the image's {w}x{h}")
        b, lab = _keep_good(str(path), b, lab, w, h, policy, warnings)
        images.append(img)
        boxes.append(b)
        labels.append(lab)
        files.append(str(path))
    if not images:
        raise DlrunError(f"{source}: no annotated images")
    return DetectionSet(images, boxes, labels, list(class_names), source, files=files, warnings=warnings)


@DATA.register("coco", "A COCO-format annotations JSON and its image folder", tags=("detection",))
def load_coco(data_cfg) -> DetectionSet:
    ann_file = _required_path(data_cfg, "annotations", "data.annotations=instances.json data.images=folder/")
    folder = _required_path(data_cfg, "images", "data.images=<folder the JSON's file_name entries are in>")
    try:
        spec = json.loads(ann_file.read_text())
        cats = sorted(spec["categories"], key=lambda c: c["id"])
        index = {int(c["id"]): k for k, c in enumerate(cats)}
        per_image = {int(im["id"]): (im, [], []) for im in spec["images"]}
        annotations = spec.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DlrunError(f"{ann_file}: not a COCO annotations file ({type(e).__name__}: {e})") from None
    warnings: list[str] = []
    for a in annotations:
        im = per_image.get(int(a.get("image_id", -1)))
        name = im[0]["file_name"] if im else f"image_id {a.get('image_id')}"
        if im is None or int(a.get("category_id", -1)) not in index or len(a.get("bbox", [])) != 4:
            msg = f"{ann_file.name}: annotation {a.get('id')} of {name}: unknown image/category or no 4-number bbox"
            if _policy(data_cfg) == "error":
                raise DlrunError(msg)
            warnings.append(msg + "; skipped")
            continue
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        im[1].append([x, y, x + w, y + h])
        im[2].append(index[int(a["category_id"])])
    records = [(folder / im["file_name"], im.get("width"), im.get("height"), b, lab)
               for im, b, lab in per_image.values()]
    return _assemble(records, [c["name"] for c in cats], str(ann_file.resolve()), _policy(data_cfg), warnings)


@DATA.register("voc", "Pascal VOC XML annotations + JPEG folder, or a CSV of filename,width,height,class,"
               "xmin,ymin,xmax,ymax rows", tags=("detection",))
def load_voc(data_cfg) -> DetectionSet:
    path = _required_path(data_cfg, "path", "data.path=<folder of VOC .xml files, or a .csv file>")
    images = data_cfg.get("images")
    policy = _policy(data_cfg)
    if path.is_file() and path.suffix.lower() == ".csv":
        folder = Path(str(images)) if images else path.parent
        return _voc_csv(path, folder, policy)
    folder = Path(str(images)) if images else (path.parent / "JPEGImages" if path.name == "Annotations" else path)
    return _voc_xml(path, folder, policy, data_cfg.get("classes"))


def _voc_xml(folder: Path, images: Path, policy: str, classes) -> DetectionSet:
    import xml.etree.ElementTree as ET

    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DlrunError(f"data.path: no .xml annotation files in '{folder}'")
    parsed, warnings = [], []
    for f in files:
        try:
            root = ET.parse(f).getroot()
            size = root.find("size")
            width = int(float(size.findtext("width"))) if size is not None else None
            height = int(float(size.findtext("height"))) if size is not None else None
            objects = []
            for obj in root.iter("object"):
                bb = obj.find("bndbox")
                objects.append((obj.findtext("name").strip(),
                                [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]))
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise DlrunError(f"{f}: not a readable VOC annotation ({type(e).__name__}: {e})") from None
        parsed.append((images / (root.findtext("filename") or f.stem + ".jpg"), width, height, objects))
    names = list(classes) if classes else sorted({n for *_, objs in parsed for n, _ in objs})
    records = []
    for file, width, height, objs in parsed:
        known = [(n, b) for n, b in objs if n in names]
        for n, _ in objs:
            if n not in names:
                warnings.append(f"{file}: skipped a box of class '{n}' (not in data.classes)")
        records.append((file, width, height, [b for _, b in known], [names.index(n) for n, _ in known]))
    return _assemble(records, names, str(folder.resolve()), policy, warnings)


def _voc_csv(csv: Path, images: Path, policy: str) -> DetectionSet:
    from dlrun.data.csv import first_empty, read_csv, strictly_numeric

    frame = read_csv(csv, sep=",", min_columns=1)  # its one-line errors, with the file's line
    needed = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DlrunError(f"{csv}: missing column(s) {', '.join(missing)}", f"expected {','.join(needed)}")
    for name in needed:
        first_empty(frame[name], name, csv, f"every row needs all of {','.join(needed)}")
        if name not in ("filename", "class"):
            frame[name] = strictly_numeric(frame[name], name, csv)
    names = sorted(frame["class"].astype(str).unique())
    records = []
    for name, rows in frame.groupby("filename", sort=True):
        b = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype="float64")
        records.append((images / str(name), int(rows["width"].iloc[0]), int(rows["height"].iloc[0]), b,
                        [names.index(str(c)) for c in rows["class"]]))
    return _assemble(records, names, str(csv.resolve()), policy, [])


# -- TensorFlow Datasets ------------------------------------------------------------------------


def tfds_record(example, image_key: str = "image", objects_key: str = "objects", bbox_key: str = "bbox",
                label_key: str = "label"):
    """One TFDS detection example (numpy dict) -> (image uint8 HxWx3, boxes (n, 4) pixel xyxy,
    labels (n,) int64). TFDS boxes are relative (ymin, xmin, ymax, xmax) (tfds.features.BBox);
    crowd boxes (`is_crowd`, COCO) are left out as in data=coco. Boxes are not checked here: the
    loader checks them like every other source's."""
    if image_key not in example or objects_key not in example:
        raise DlrunError(f"tfds example has no '{image_key}' image or no '{objects_key}' feature "
                         f"(features: {', '.join(sorted(example))})",
                         "set data.image_key / data.objects_key to the data set's feature names")
    image, objects = np.asarray(example[image_key]), example[objects_key]
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    h, w = image.shape[:2]
    rel = np.asarray(objects[bbox_key], dtype="float32").reshape(-1, 4)
    labels = np.asarray(objects[label_key], dtype="int64").reshape(-1)
    keep = ~np.asarray(objects.get("is_crowd", np.zeros(len(labels), bool)), dtype=bool).reshape(-1)
    boxes = rel[:, [1, 0, 3, 2]] * np.array([w, h, w, h], dtype="float32")
    return image, boxes[keep], labels[keep]


@DATA.register("tfds_detection", "A TensorFlow Datasets detection set by name, e.g. voc/2007 "
               "(needs tensorflow-datasets)", tags=("detection",))
def load_tfds_detection(data_cfg) -> DetectionSet:
    # Registry names are global (one entry per name, checked per task with its tags), and "tfds"
    # is the image classification loader in dlrun/data/images.py, hence this name.
    from dlrun.download import require_tfds, tfds_load

    tfds = require_tfds("tfds_detection", "data=voc or data=coco on local files")
    name = data_cfg.get("dataset")
    if name in (None, "", "???"):
        raise DlrunError("data.dataset is required for data=tfds_detection", "data.dataset=voc/2007")
    name, policy = str(name), _policy(data_cfg)
    splits = {s: str(data_cfg[f"{s}_split"]) for s in ("train", "val", "test")}
    keys = {k: str(data_cfg.get(k, d)) for k, d in (("image_key", "image"), ("objects_key", "objects"),
                                                    ("bbox_key", "bbox"), ("label_key", "label"))}
    parts, info = tfds_load(tfds, data_cfg, name, list(splits.values()))
    try:
        label = info.features[keys["objects_key"]][keys["label_key"]]
    except (KeyError, TypeError):
        raise DlrunError(f"tfds data set '{name}' has no {keys['objects_key']}/{keys['label_key']} feature",
                         "data=tfds_detection needs a detection set (objects with bbox and label)") from None
    class_names = list(getattr(label, "names", None) or [str(i) for i in range(int(label.num_classes))])
    limit = data_cfg.get("limit")
    images, boxes, labels, files, split, warnings = [], [], [], [], {}, []
    for (s, spec), part in zip(splits.items(), parts, strict=True):
        start = len(images)
        for k, example in enumerate(tfds.as_numpy(part.take(int(limit)) if limit else part)):
            img, b, lab = tfds_record(example, **keys)
            where = f"{name}[{spec}] example {k}"
            b, lab = _keep_good(where, b, lab, img.shape[1], img.shape[0], policy, warnings)
            images.append(img)
            boxes.append(b)
            labels.append(lab)
            files.append(where)
        if len(images) == start:
            raise DlrunError(f"tfds data set '{name}': split '{spec}' is empty")
        split[s] = np.arange(start, len(images))
    return DetectionSet(images, boxes, labels, class_names, f"tfds:{name}", files=files, split=split, warnings=warnings)


# -- splits -------------------------------------------------------------------------------------


def split_indices(src: DetectionSet, val_size: float, test_size: float, seed: int) -> dict[str, np.ndarray]:
    if src.split is not None:
        return src.split
    n = len(src.images)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_size)))
    n_val = max(1, int(round(n * val_size)))
    if n - n_test - n_val < 1:
        raise DlrunError(f"{n} annotated image(s) are too few for train/val/test splits", "add images")
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}

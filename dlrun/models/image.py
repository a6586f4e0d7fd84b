"""Image classifiers: VGG-style CNN, a small ResNet, and any keras.applications model.

All take images scaled to [0, 1] (see dlrun/data/images.py) and end in the task's output head.
They use built-in Keras layers only, so a saved `.keras` model reloads without custom objects.
"""

from __future__ import annotations

import contextlib

from dlrun.errors import DlrunError, did_you_mean
from dlrun.models.heads import dense_stack, output_head
from dlrun.models.mlp import regularizer
from dlrun.registry import MODELS

# keras.applications models whose minimum input side is not 32 pixels
APP_MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
POOLINGS = ("max", "avg", "none")


def _spatial_ok(x) -> bool:
    """Whether a 2x2 pooling / stride-2 step still fits the feature map."""
    return all(d is None or d >= 2 for d in x.shape[1:3])


def _dense_head(x, model_cfg, info, reg=None):
    x = dense_stack(x, model_cfg.get("dense_units"), model_cfg.activation,
                    float(model_cfg.dense_dropout), reg=reg, name="fc")
    return output_head(x, info, model_cfg)


@MODELS.register("cnn", "VGG-style blocks of Conv2D (+BatchNorm) + pooling + dropout, dense head",
                 tags=("image",))
def build_cnn(model_cfg, info):
    """[Conv2D -> (BatchNorm) -> act] x convs_per_block -> pool -> (Dropout), per entry of filters;
    then Flatten (or global average pooling) -> Dense layers -> output head.

    The course CNN is filters=[32, 64], convs_per_block=1, dense_units=[256]; the VGG subset adds
    a second conv per block, batch norm and dropout. Pooling is skipped once the map is 1 pixel.
    """
    import keras

    pooling = model_cfg.pooling
    if pooling not in POOLINGS:
        raise DlrunError(f"model.pooling: unknown value '{pooling}'", did_you_mean(pooling, POOLINGS))
    bn, act, reg = bool(model_cfg.batch_norm), model_cfg.activation, regularizer(model_cfg)
    inputs = keras.Input(shape=tuple(info.input_shape), name="image")
    x = inputs
    for b, filters in enumerate(model_cfg.filters):
        for c in range(int(model_cfg.convs_per_block)):
            x = keras.layers.Conv2D(int(filters), int(model_cfg.kernel_size), padding=model_cfg.padding,
                                    activation=None if bn else act, use_bias=not bn,
                                    kernel_regularizer=reg, name=f"block{b}_conv{c}")(x)
            if bn:
                x = keras.layers.BatchNormalization(name=f"block{b}_bn{c}")(x)
                x = keras.layers.Activation(act, name=f"block{b}_act{c}")(x)
        if pooling != "none" and _spatial_ok(x):
            pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
            x = pool(2, name=f"block{b}_pool")(x)
        if model_cfg.dropout:
            x = keras.layers.Dropout(float(model_cfg.dropout), name=f"block{b}_dropout")(x)
    if model_cfg.global_pool:
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _dense_head(x, model_cfg, info, reg), name="cnn")


@MODELS.register("resnet", "Small ResNet: stages of residual blocks, global pooling, dense head",
                 tags=("image",))
def build_resnet(model_cfg, info):
    """Stem conv -> for each stage (filters[i]): blocks_per_stage basic residual blocks, the first of
    each later stage with stride 2 -> global average pooling -> (Dropout) -> output head.

    Three stages with n blocks each make the CIFAR ResNet of depth 6n + 2 (n=3: ResNet-20).
    """
    import keras

    L = keras.layers
    reg = regularizer(model_cfg)
    act = model_cfg.activation

    def conv(x, filters, kernel, stride, name):
        return L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                        kernel_initializer="he_normal", kernel_regularizer=reg, name=name)(x)

    inputs = keras.Input(shape=tuple(info.input_shape), name="image")
    x = conv(inputs, int(model_cfg.filters[0]), 3, 1, "stem_conv")
    x = L.Activation(act, name="stem_act")(L.BatchNormalization(name="stem_bn")(x))
    for s, filters in enumerate(model_cfg.filters):
        filters = int(filters)
        for b in range(int(model_cfg.blocks_per_stage)):
            name = f"stage{s}_block{b}"
            stride = 2 if (s > 0 and b == 0 and _spatial_ok(x)) else 1
            y = conv(x, filters, 3, stride, f"{name}_conv1")
            y = L.Activation(act, name=f"{name}_act1")(L.BatchNormalization(name=f"{name}_bn1")(y))
            y = L.BatchNormalization(name=f"{name}_bn2")(conv(y, filters, 3, 1, f"{name}_conv2"))
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = L.BatchNormalization(name=f"{name}_proj_bn")(conv(x, filters, 1, stride, f"{name}_proj"))
            x = L.Activation(act, name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    if model_cfg.dropout:
        x = L.Dropout(float(model_cfg.dropout), name="dropout")(x)
    return keras.Model(inputs, _dense_head(x, model_cfg, info, reg), name="resnet")


def application(name: str):
    """The keras.applications constructor called `name` (ResNet50V2, MobileNetV2, VGG16, ...)."""
    import keras

    apps = sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))
    if name not in apps:
        raise DlrunError(f"model.application: unknown keras.applications model '{name}'", did_you_mean(name, apps))
    return getattr(keras.applications, name)


def preprocess_affine(fn):
    """The app's preprocess_input as a per-channel affine map of RGB pixel values in [0, 255]:
    (M, b) with out = in @ M + b. Every keras.applications preprocessing (tf, torch, caffe/BGR,
    identity) has this form, so it becomes one frozen 1x1 convolution in the model."""
    import keras
    import numpy as np

    module = keras.applications.__dict__.get(fn.__module__.rsplit(".", 1)[-1])
    pre = getattr(module, "preprocess_input", None)
    if pre is None:
        raise DlrunError(f"model.application: no preprocess_input found for {fn.__name__}")
    probe = np.zeros((4, 1, 1, 3), "float32")
    for k in range(3):
        probe[k + 1, 0, 0, k] = 255.0
    out = np.asarray(pre(probe.copy()), dtype="float64")[:, 0, 0, :]
    b = out[0]
    M = (out[1:] - b) / 255.0
    check = np.asarray(pre(np.full((1, 1, 1, 3), 100.0, "float32")), dtype="float64")[0, 0, 0]
    if not np.allclose(check, np.full(3, 100.0) @ M + b, atol=1e-3):
        raise DlrunError(f"model.application: {fn.__name__}'s preprocess_input is not a per-channel affine map")
    return M, b


def load_app(name: str, model_cfg, input_shape, key: str, **kwargs):
    """The keras.applications model `name` without its top at `input_shape`, with model.weights
    (null, or imagenet: downloaded once under the download guard, then cached by Keras); a shape
    the app refuses is one line naming model.<key>. Classifiers, SSD and FCN backbones."""
    from dlrun.download import downloading

    weights = model_cfg.get("weights") or None
    if weights not in (None, "imagenet"):
        raise DlrunError(f"model.weights: unknown value '{weights}'", "valid: null, imagenet")
    hint = "Keras caches weights under $KERAS_HOME/models (~/.keras) after one online run; weights=null works offline"
    guard = downloading(f"ImageNet weights for {name}", model_cfg.download_timeout, hint) \
        if weights else contextlib.nullcontext()
    try:
        with guard:
            return application(name)(include_top=False, weights=weights, input_shape=tuple(input_shape), **kwargs)
    except (ValueError, TypeError) as e:
        raise DlrunError(f"model.{key}={name}: {str(e).strip().splitlines()[0][:200]}") from None


def app_maps(name: str, model_cfg, inputs, sides: list[int]) -> list:
    """Feature maps of a keras.applications model (include_top=False) on square `inputs`: for
    each side in `sides`, the output of its last layer with a side x side output (stride 8 is the
    first SSD map; strides 8, 16, 32 are FCN's skips), behind the app's own preprocessing (a
    frozen 1x1 conv, as in build_keras_app). model.weights=imagenet downloads once, then Keras
    caches; model.freeze_backbone keeps the app's weights fixed."""
    import keras

    fn = application(name)
    size = tuple(int(d) for d in inputs.shape[1:3])
    base = load_app(name, model_cfg, (*size, 3), "backbone")
    cuts = []
    for side in sides:
        cut = [layer for layer in base.layers if tuple(layer.output.shape[1:3]) == (side, side)]
        if not cut:
            raise DlrunError(f"model.backbone={name}: no layer with a {side}x{side} output "
                             f"(stride {size[0] // side}) at {size[0]}x{size[1]}")
        cuts.append(cut[-1].output)
    features = keras.Model(base.input, cuts, name=f"{name}_features")
    features.trainable = not bool(model_cfg.freeze_backbone)
    M, b = preprocess_affine(fn)
    pre = keras.layers.Conv2D(3, 1, trainable=False, name="app_preprocess")
    x = pre(inputs)
    pre.set_weights([(M * 255.0).reshape(1, 1, 3, 3).astype("float32"), b.astype("float32")])
    out = features(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@MODELS.register("keras_app", "Any keras.applications model (ResNet50V2, MobileNetV2, VGG16, EfficientNetB0, ...)",
                 tags=("image",))
def build_keras_app(model_cfg, info):
    """[0, 1] images -> Resizing (to at least the app's minimum size) -> the app's own preprocessing
    (a frozen 1x1 conv; grayscale becomes RGB) -> base (include_top=False) -> pooling -> Dropout
    -> Dense layers -> output head.

    weights=imagenet downloads once (then cached by Keras); freeze_base keeps the base frozen and
    its BatchNorm in inference mode; fine_tune_from_layer (index or name) unfreezes the layers from
    there on, for the second stage of transfer learning.
    """
    import keras

    name = str(model_cfg.application)
    fn = application(name)
    shape = tuple(int(d) for d in info.input_shape)
    if len(shape) not in (2, 3):
        raise DlrunError(f"model=keras_app needs images (height, width[, channels]), got input shape {shape}")
    h, w, c = shape if len(shape) == 3 else (*shape, 1)
    min_size = int(model_cfg.get("input_size") or APP_MIN_SIZE.get(name, 32))
    size = (max(h, min_size), max(w, min_size))

    if c not in (1, 3):
        raise DlrunError(f"model=keras_app needs 1- or 3-channel images, got {c} channels")
    inputs = keras.Input(shape=shape, name="image")
    x = inputs if len(shape) == 3 else keras.layers.Reshape((h, w, 1), name="add_channel")(inputs)
    if size != (h, w):
        x = keras.layers.Resizing(*size, name="resize")(x)
    M, b = preprocess_affine(fn)
    kernel = (M if c == 3 else M.sum(axis=0, keepdims=True)) * 255.0  # input in [0, 1]; gray -> RGB
    pre = keras.layers.Conv2D(3, 1, trainable=False, name="app_preprocess")
    x = pre(x)
    pre.set_weights([kernel.reshape(1, 1, c, 3).astype("float32"), b.astype("float32")])

    base = load_app(name, model_cfg, (*size, 3), "application", **dict(model_cfg.get("app_kwargs") or {}))
    freeze = bool(model_cfg.freeze_base)
    base.trainable = not freeze
    start = model_cfg.get("fine_tune_from_layer")
    if start is not None:
        names = [layer.name for layer in base.layers]
        if isinstance(start, str) and start not in names:
            raise DlrunError(f"model.fine_tune_from_layer: no layer '{start}' in {name}",
                             f"{len(names)} layers; use an index or a name such as '{names[len(names) // 2]}'")
        idx = names.index(start) if isinstance(start, str) else int(start)
        base.trainable = True
        for layer in base.layers[:idx]:
            layer.trainable = False
    # A frozen base (or one being fine-tuned) keeps its BatchNorm statistics: training=False.
    x = base(x, training=False) if freeze else base(x)
    pooling = model_cfg.pooling
    if pooling not in ("avg", "max", "flatten"):
        raise DlrunError(f"model.pooling: unknown value '{pooling}'", "valid: avg, max, flatten")
    x = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
         "flatten": keras.layers.Flatten}[pooling](name="pool")(x)
    if model_cfg.head_batch_norm:  # rescales a frozen base's features for the new head
        x = keras.layers.BatchNormalization(name="head_bn")(x)
    if model_cfg.dropout:
        x = keras.layers.Dropout(float(model_cfg.dropout), name="dropout")(x)
    return keras.Model(inputs, _dense_head(x, model_cfg, info), name=f"keras_app_{name}")

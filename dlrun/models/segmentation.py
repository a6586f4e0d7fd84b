"""Semantic segmentation networks (course "Segmentation"): the fully convolutional network (FCN)
and U-Net. Both map images in [0, 1] of the data's size to per-pixel class probabilities
(B, H, W, classes), softmax over the classes, kept float32 under mixed precision.

FCN (Long, Shelhamer & Darrell): a CNN backbone whose blocks each halve the map (stride 2^B
after B blocks), two convolutions in place of the classifier's dense layers, a 1x1 convolution
giving one score map per class, and transposed convolutions that upsample the scores back to
the input size. 32s upsamples the last scores by 32 in one step; 16s first upsamples them by 2
and adds the 1x1 scores of the stride-16 features (skip fusion), then upsamples by 16; 8s adds
the stride-8 scores as well and upsamples by 8. Each transposed convolution has kernel 2s for
stride s and padding "same": out = (in - 1) s - 2 pad + kernel with pad = s / 2, i.e. in x s.
Its kernel starts as bilinear interpolation (as in the paper), so an untrained net upsamples
smoothly.

U-Net (Ronneberger et al.): an encoder of conv blocks with pooling, a decoder that upsamples
(transposed convolution), concatenates the encoder's features of the same size and convolves.
"""

from __future__ import annotations

import numpy as np

from dlrun.errors import DlrunError
from dlrun.models.image import app_maps
from dlrun.registry import MODELS

VARIANTS = {"32s": 0, "16s": 1, "8s": 2}  # variant -> number of skip fusions


def transposed_size(n: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Output side of a transposed convolution: (n - 1) * stride - 2 * pad + kernel."""
    return (int(n) - 1) * int(stride) - 2 * int(pad) + int(kernel)


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """A (size, size, channels, channels) transposed-convolution kernel that performs bilinear
    upsampling of each channel on its own (the FCN paper's initialisation)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)
    kernel = np.zeros((size, size, channels, channels), dtype="float32")
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


def _check_side(info, stride: int, model: str) -> tuple[int, int]:
    h, w = (int(d) for d in info.input_shape[:2])
    if h % stride or w % stride:
        raise DlrunError(f"model={model} needs image sides divisible by {stride}, got {h}x{w}",
                         f"set data.image_size to a multiple of {stride}, or use fewer blocks (model.filters)")
    return h, w


def _conv_block(x, filters: int, convs: int, model_cfg, name: str):
    """[Conv2D 3x3 -> (BatchNorm) -> activation] x convs."""
    import keras

    bn, act = bool(model_cfg.batch_norm), str(model_cfg.activation)
    reg = keras.regularizers.l2(float(model_cfg.l2)) if model_cfg.get("l2") else None
    for c in range(convs):
        x = keras.layers.Conv2D(int(filters), 3, padding="same", use_bias=not bn, kernel_regularizer=reg,
                                kernel_initializer="he_normal", name=f"{name}_conv{c}")(x)
        if bn:
            x = keras.layers.BatchNormalization(momentum=float(model_cfg.bn_momentum), name=f"{name}_bn{c}")(x)
        x = keras.layers.Activation(act, name=f"{name}_act{c}")(x)
    return x


def _softmax(x):
    import keras

    return keras.layers.Activation("softmax", dtype="float32", name="output")(x)


@MODELS.register("fcn", "Fully convolutional network: CNN backbone, 1x1 class scores, transposed-conv "
                 "upsampling with skip fusion (32s/16s/8s)", tags=("segmentation",))
def build_fcn(model_cfg, info):
    """Backbone (small VGG-style blocks, or a keras.applications model cut at strides 8/16/32)
    -> two `fc_filters` convolutions (the classifier's dense layers made convolutional) -> 1x1
    class scores -> skip fusion by model.variant -> transposed convolution to the input size."""
    import keras

    variant = str(model_cfg.variant)
    if variant not in VARIANTS:
        raise DlrunError(f"model.variant: unknown value '{variant}'", f"valid: {', '.join(VARIANTS)}")
    skips, k = VARIANTS[variant], int(info.num_classes)
    backbone = str(model_cfg.backbone)
    inputs = keras.Input(shape=tuple(info.input_shape), name="image")
    if backbone == "small":
        blocks = len(model_cfg.filters)
        if blocks < skips + 1:
            raise DlrunError(f"model.variant={variant} fuses {skips} skip(s): model.filters needs at least "
                             f"{skips + 1} blocks, got {blocks}")
        h, _ = _check_side(info, 2 ** blocks, "fcn")
        x, taps = inputs, []
        for b, filters in enumerate(model_cfg.filters):
            x = _conv_block(x, int(filters), int(model_cfg.convs_per_block), model_cfg, f"block{b}")
            x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
            taps.append(x)
        taps = taps[-(skips + 1):]  # strides 2^(B - skips) .. 2^B, the deepest last
    else:  # the course's FCN sits on VGG16: its pool3, pool4 and pool5 are the stride 8, 16, 32 maps
        h, _ = _check_side(info, 32, "fcn")
        taps = app_maps(backbone, model_cfg, inputs, [h // 2 ** (5 - i) for i in range(skips, -1, -1)])
        blocks = 5
    x = taps[-1]
    drop = float(model_cfg.get("dropout") or 0.0)
    for i in range(2):  # fc6 (3x3) and fc7 (1x1), as convolutions
        x = keras.layers.Conv2D(int(model_cfg.fc_filters), 3 if i == 0 else 1, padding="same",
                                activation=str(model_cfg.activation), name=f"fc{6 + i}")(x)
        if drop:
            x = keras.layers.Dropout(drop, name=f"fc{6 + i}_dropout")(x)
    score = keras.layers.Conv2D(k, 1, name=f"score_stride{2 ** blocks}")(x)
    ups = []
    for i, tap in enumerate(reversed(taps[:-1])):  # 16s: + stride 16 scores; 8s: + stride 8 scores
        stride = 2 ** (blocks - 1 - i)
        up = keras.layers.Conv2DTranspose(k, 4, strides=2, padding="same", use_bias=False,
                                          name=f"upsample_to_stride{stride}")
        ups.append((up, 4))
        skip = keras.layers.Conv2D(k, 1, kernel_initializer="zeros", name=f"score_stride{stride}")(tap)
        score = keras.layers.Add(name=f"fuse_stride{stride}")([up(score), skip])
    stride = 2 ** (blocks - skips)
    final = keras.layers.Conv2DTranspose(k, 2 * stride, strides=stride, padding="same", use_bias=False,
                                         name=f"upsample_x{stride}")
    ups.append((final, 2 * stride))
    out = _softmax(final(score))
    for layer, size in ups:  # bilinear start: an untrained FCN already upsamples smoothly
        layer.set_weights([bilinear_kernel(size, k)])
    return keras.Model(inputs, out, name=f"fcn{variant}")


@MODELS.register("unet", "U-Net: conv encoder, transposed-conv decoder with skip concatenation",
                 tags=("segmentation",))
def build_unet(model_cfg, info):
    """Encoder: per entry of filters but the last, a conv block then 2x2 max pooling (its output
    before pooling kept as a skip); bottleneck: a conv block of filters[-1]; decoder: per skip,
    Conv2DTranspose(2x2, stride 2) -> concatenate the skip -> conv block; 1x1 conv -> softmax."""
    import keras

    filters = [int(f) for f in model_cfg.filters]
    if len(filters) < 2:
        raise DlrunError(f"model.filters needs at least 2 entries (encoder levels + bottleneck), got {filters}")
    _check_side(info, 2 ** (len(filters) - 1), "unet")
    convs = int(model_cfg.convs_per_block)
    drop = float(model_cfg.get("dropout") or 0.0)
    inputs = keras.Input(shape=tuple(info.input_shape), name="image")
    x, skips = inputs, []
    for i, f in enumerate(filters[:-1]):
        x = _conv_block(x, f, convs, model_cfg, f"enc{i}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    x = _conv_block(x, filters[-1], convs, model_cfg, "bottleneck")
    if drop:
        x = keras.layers.Dropout(drop, name="bottleneck_dropout")(x)
    for i, (f, skip) in reversed(list(enumerate(zip(filters[:-1], skips, strict=True)))):
        x = keras.layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"dec{i}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = _conv_block(x, f, convs, model_cfg, f"dec{i}")
    out = _softmax(keras.layers.Conv2D(int(info.num_classes), 1, name="score")(x))
    return keras.Model(inputs, out, name="unet")

"""SSD (course "Detection"): a small CNN backbone, feature maps at several scales and, on each
map, a 3x3 convolution predicting per default box 4 offsets and C + 1 class scores (class 0 =
background). The network maps images in [0, 1] to one tensor (B, A, 4 + C + 1): offsets first,
then class logits; A is the number of default boxes (dlrun/detection/boxes.default_boxes, same
order). Decoding and NMS are outside the network (the served model adds them).
"""

from __future__ import annotations

from dlrun.errors import DlrunError
from dlrun.models.image import app_maps
from dlrun.registry import MODELS


def feature_sizes(model_cfg, size: int) -> list[int]:
    """Side of each feature map for a square input of `size` pixels."""
    extras = len(model_cfg.extra_filters)
    # the small backbone halves once per stage; a keras.applications backbone is cut at stride 8
    stages = len(model_cfg.filters) if str(model_cfg.backbone) == "small" else 3
    first = size
    for _ in range(stages):
        first = -(-first // 2)
    sizes = [first]
    for _ in range(extras):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def layout(model_cfg, info) -> tuple[list[int], list[float], list[float]]:
    """(feature sizes, scales, aspect ratios): from the config, or the data's k-means (info)."""
    size = int(info.input_shape[0])
    sizes = feature_sizes(model_cfg, size)
    scales = list(getattr(info, "scales", None) or model_cfg.scales)
    ratios = list(getattr(info, "aspect_ratios", None) or model_cfg.aspect_ratios)
    if len(scales) != len(sizes) + 1:
        raise DlrunError(f"model.scales: {len(sizes)} feature maps need {len(sizes) + 1} scales, got {len(scales)}",
                         "one per map plus one (the last map's extra box)")
    if not ratios or min(ratios) <= 0:
        raise DlrunError(f"model.aspect_ratios must be positive numbers, got {ratios}")
    return sizes, [float(s) for s in scales], [float(r) for r in ratios]


@MODELS.register("ssd", "Single-shot detector: small CNN backbone, multi-scale heads over default boxes",
                 tags=("detection",))
def build_ssd(model_cfg, info):
    import keras
    from keras import layers

    sizes, scales, ratios = layout(model_cfg, info)
    k = len(ratios) + 1
    classes = int(info.num_classes) + 1
    reg = keras.regularizers.l2(float(model_cfg.l2)) if model_cfg.get("l2") else None

    def conv(x, filters, stride=1, name=None):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg,
                          name=name)(x)
        x = layers.BatchNormalization(momentum=float(model_cfg.bn_momentum))(x)
        return layers.Activation(str(model_cfg.activation))(x)

    inputs = keras.Input(shape=tuple(info.input_shape), name="image")
    backbone = str(model_cfg.backbone)
    if backbone == "small":
        x = inputs
        for filters in model_cfg.filters:  # each stage halves first (stride-2 conv), then a conv: cheap on CPU
            x = conv(x, int(filters), stride=2)
            x = conv(x, int(filters))
    else:
        x = app_maps(backbone, model_cfg, inputs, [sizes[0]])[0]  # stride 8
    maps = [conv(x, int(model_cfg.filters[-1]))]
    for filters in model_cfg.extra_filters:  # extra layers, each halving the map
        maps.append(conv(conv(maps[-1], int(filters) // 2), int(filters), stride=2))
    loc, conf = [], []
    for i, (m, side) in enumerate(zip(maps, sizes, strict=False)):
        h = conv(m, int(model_cfg.head_filters)) if model_cfg.get("head_filters") else m
        loc.append(layers.Reshape((side * side * k, 4))(layers.Conv2D(4 * k, 3, padding="same",
                                                                          name=f"loc_{i}")(h)))
        conf.append(layers.Reshape((side * side * k, classes))(layers.Conv2D(
            classes * k, 3, padding="same", name=f"conf_{i}")(h)))
    loc = layers.Concatenate(axis=1, name="offsets")(loc)
    conf = layers.Concatenate(axis=1, name="logits")(conf)
    out = layers.Concatenate(axis=-1, name="ssd", dtype="float32")([loc, conf])
    return keras.Model(inputs, out, name="ssd")


_SSD = None


def ssd_class():
    """The SSD keras.Model subclass that trains an SSD network with Keras' fit (made on first
    use: Keras is imported lazily).

    `compute_loss` is the SSD loss of dlrun/detection/boxes.ssd_loss on the matched targets the
    data pipeline yields ({"loc", "cls"}), plus the network's regularisation losses, divided by
    the replica count as Keras' own losses are (the optimizer sums the replicas' gradients);
    its two parts are tracked as `conf_loss` and `loc_loss` (val_ too). Everything else (the
    step, loss scaling under mixed_float16, strategies, callbacks) is Keras'. `network` is the
    functional SSD (what the served model wraps); `neg_pos_ratio` and `alpha` come from task.loss.
    """
    global _SSD
    if _SSD is not None:
        return _SSD
    import keras
    from keras.src.losses.loss import scale_loss_for_distribution  # what Keras' own losses use

    from dlrun.detection.boxes import ssd_loss

    @keras.saving.register_keras_serializable(package="dlrun")
    class SSD(keras.Model):
        def __init__(self, network, neg_pos_ratio: float = 3.0, alpha: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.network, self.neg_pos_ratio, self.alpha = network, float(neg_pos_ratio), float(alpha)
            self.conf_tracker = keras.metrics.Mean(name="conf_loss")
            self.loc_tracker = keras.metrics.Mean(name="loc_loss")

        def call(self, x, training=False):
            return self.network(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss, conf, loc = ssd_loss(y["loc"], y["cls"], y_pred[..., :4], y_pred[..., 4:], self.neg_pos_ratio,
                                       self.alpha)
            self.conf_tracker.update_state(conf)
            self.loc_tracker.update_state(loc)
            if self.losses:
                loss = loss + keras.ops.sum(self.losses)
            return scale_loss_for_distribution(loss)

        def get_config(self):
            return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                    "neg_pos_ratio": self.neg_pos_ratio, "alpha": self.alpha}

        @classmethod
        def from_config(cls, config):
            config["network"] = keras.saving.deserialize_keras_object(config["network"])
            return cls(**config)

    _SSD = SSD
    return SSD

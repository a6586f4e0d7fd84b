"""GAN models for task=gan: one functional keras.Model holding a `generator` and a
`discriminator` (so checkpoints, parameter counts and weights cover both).

dcgan: noise -> Dense -> [Conv2DTranspose stride 2] x 2 -> sigmoid image; discriminator
Conv2D stride 2 x 2 -> logit. cgan: the class label is embedded and joined to the noise
(generator) and added as an extra image channel (discriminator).
"""

from __future__ import annotations

from dlrun.errors import DlrunError
from dlrun.registry import MODELS


def _build(model_cfg, info, conditional: bool):
    import keras

    h, w, c = (int(d) for d in info.input_shape)
    if h % 4 or w % 4:
        raise DlrunError(f"{model_cfg.name}: image size {h}x{w} must be a multiple of 4", "e.g. data.upsample=2")
    latent, width = int(model_cfg.latent_dim), int(model_cfg.get("filters", 64))
    classes = int(info.num_classes or 1)
    L = keras.layers
    noise = keras.Input(shape=(latent,), name="noise")
    label = keras.Input(shape=(), dtype="int32", name="label")
    g_in = [noise, label] if conditional else [noise]
    x = noise
    if conditional:
        x = L.Concatenate()([noise, L.Flatten()(L.Embedding(classes, 16)(label))])
    x = L.Dense((h // 4) * (w // 4) * width * 2, use_bias=False)(x)
    x = L.LeakyReLU(0.2)(L.BatchNormalization()(x))
    x = L.Reshape((h // 4, w // 4, width * 2))(x)
    x = L.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False)(x)
    x = L.LeakyReLU(0.2)(L.BatchNormalization()(x))
    img = L.Conv2DTranspose(c, 4, strides=2, padding="same", activation="sigmoid")(x)
    generator = keras.Model(g_in if conditional else noise, img, name="generator")

    image = keras.Input(shape=(h, w, c), name="image")
    d_label = keras.Input(shape=(), dtype="int32", name="d_label")
    x = image
    if conditional:
        plane = L.Reshape((h, w, 1))(L.Embedding(classes, h * w)(d_label))
        x = L.Concatenate()([image, plane])
    x = L.LeakyReLU(0.2)(L.Conv2D(width, 4, strides=2, padding="same")(x))
    x = L.Dropout(float(model_cfg.get("dropout", 0.3)))(x)
    x = L.LeakyReLU(0.2)(L.Conv2D(width * 2, 4, strides=2, padding="same")(x))
    x = L.Flatten()(x)
    logit = L.Dense(1)(x)
    discriminator = keras.Model([image, d_label] if conditional else image, logit, name="discriminator")

    fake = generator(g_in if conditional else noise)
    score = discriminator([fake, label] if conditional else fake)
    return keras.Model(g_in, [fake, score], name="cgan" if conditional else "dcgan")


@MODELS.register("dcgan", "DCGAN: transposed-conv generator and conv discriminator (task=gan)", tags=("gan",))
def build_dcgan(model_cfg, info):
    return _build(model_cfg, info, conditional=False)


@MODELS.register("cgan", "Conditional DCGAN: class label joined to the noise and to the discriminator input",
                 tags=("gan",))
def build_cgan(model_cfg, info):
    return _build(model_cfg, info, conditional=True)

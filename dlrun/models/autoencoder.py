"""Autoencoders for task=autoencoder: an `encoder` and a `decoder` sub-model chained.

The latent layer takes the course knobs (L1/L2 activity penalty, dropout, size). Image
reconstructions end in a sigmoid (pixels in [0, 1]); tabular/series ones are linear.
"""

from __future__ import annotations

import math

from dlrun.registry import MODELS


def _activity(model_cfg):
    import keras

    l1, l2 = float(model_cfg.activity_l1), float(model_cfg.activity_l2)
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def _out_activation(info) -> str:
    return "sigmoid" if getattr(info, "bounded", False) else "linear"


def _chain(encoder, decoder, shape, name):
    import keras

    inputs = keras.Input(shape=shape, name="inputs")
    return keras.Model(inputs, decoder(encoder(inputs)), name=name)


@MODELS.register("dense_ae", "Dense autoencoder: hidden sizes -> latent (L1/L2 activity penalty) -> mirror",
                 tags=("autoencoder",))
def build_dense_ae(model_cfg, info):
    import keras

    shape = tuple(info.input_shape)
    size = math.prod(shape)
    hidden = [int(u) for u in model_cfg.hidden_units]
    act, drop = str(model_cfg.activation), float(model_cfg.dropout)
    inputs = keras.Input(shape=shape)
    x = keras.layers.Flatten()(inputs)
    for u in hidden:
        x = keras.layers.Dense(u, activation=act)(x)
        if drop:
            x = keras.layers.Dropout(drop)(x)
    z = keras.layers.Dense(int(model_cfg.latent_dim), activity_regularizer=_activity(model_cfg), name="latent")(x)
    encoder = keras.Model(inputs, z, name="encoder")
    lat = keras.Input(shape=(int(model_cfg.latent_dim),))
    x = lat
    for u in reversed(hidden):
        x = keras.layers.Dense(u, activation=act)(x)
    x = keras.layers.Dense(size, activation=_out_activation(info))(x)
    decoder = keras.Model(lat, keras.layers.Reshape(shape)(x), name="decoder")
    return _chain(encoder, decoder, shape, "dense_ae")


@MODELS.register("conv_ae", "Convolutional autoencoder: Conv2D + MaxPooling down, Conv2DTranspose up",
                 tags=("autoencoder",))
def build_conv_ae(model_cfg, info):
    import keras

    shape = tuple(info.input_shape)
    h, w, c = shape
    filters = [int(f) for f in model_cfg.filters]
    act = str(model_cfg.activation)
    inputs = keras.Input(shape=shape)
    x = inputs
    for f in filters:
        x = keras.layers.Conv2D(f, 3, padding="same", activation=act)(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    inner = tuple(int(d) for d in x.shape[1:])
    x = keras.layers.Flatten()(x)
    if float(model_cfg.dropout):
        x = keras.layers.Dropout(float(model_cfg.dropout))(x)
    z = keras.layers.Dense(int(model_cfg.latent_dim), activity_regularizer=_activity(model_cfg), name="latent")(x)
    encoder = keras.Model(inputs, z, name="encoder")
    lat = keras.Input(shape=(int(model_cfg.latent_dim),))
    x = keras.layers.Dense(math.prod(inner), activation=act)(lat)
    x = keras.layers.Reshape(inner)(x)
    for f in reversed(filters):
        x = keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation=act)(x)
    if tuple(x.shape[1:3]) != (h, w):  # odd sizes: pooling rounded up, crop back to the input size
        x = keras.layers.Resizing(h, w)(x)
    x = keras.layers.Conv2D(c, 3, padding="same", activation=_out_activation(info))(x)
    decoder = keras.Model(lat, x, name="decoder")
    return _chain(encoder, decoder, shape, "conv_ae")


_VAE = None


def vae_class():
    """The VAE keras.Model subclass (made on first use: Keras is imported lazily).

    Hand-written because the loss needs the encoder's mean and log-variance beside the
    reconstruction: `compute_loss` adds beta * KL to the summed reconstruction error and
    tracks both terms as metrics ("reconstruction", "kl"; Keras logs them per epoch, val_ too).
    """
    global _VAE
    if _VAE is not None:
        return _VAE
    import keras

    @keras.saving.register_keras_serializable(package="dlrun")
    class VAE(keras.Model):
        def __init__(self, encoder, decoder, beta: float = 1.0, bce: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.encoder, self.decoder, self.beta, self.bce = encoder, decoder, float(beta), bool(bce)
            self.seed = keras.random.SeedGenerator(0)
            self.rec_tracker = keras.metrics.Mean(name="reconstruction")
            self.kl_tracker = keras.metrics.Mean(name="kl")

        def reparameterize(self, mean, log_var):
            """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): sampling that gradients pass through."""
            eps = keras.random.normal(keras.ops.shape(mean), seed=self.seed)
            return mean + keras.ops.exp(0.5 * log_var) * eps

        def call(self, x, training=False):
            mean, log_var = self.encoder(x, training=training)
            z = self.reparameterize(mean, log_var) if training else mean
            return self.decoder(z, training=training)

        def terms(self, x, y, y_pred, training=True):
            """(reconstruction, kl): per-example sums, averaged over the batch."""
            ops = keras.ops
            mean, log_var = self.encoder(x, training=training)
            axes = tuple(range(1, len(y.shape)))
            if self.bce:
                p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
                rec = -ops.sum(y * ops.log(p) + (1 - y) * ops.log(1 - p), axis=axes)
            else:
                rec = ops.sum(ops.square(y - y_pred), axis=axes)
            kl = -0.5 * ops.sum(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
            return ops.mean(rec), ops.mean(kl)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            rec, kl = self.terms(x, y, y_pred, training)
            self.rec_tracker.update_state(rec)
            self.kl_tracker.update_state(kl)
            return rec + self.beta * kl + (keras.ops.sum(self.losses) if self.losses else 0.0)

        @property
        def metrics(self):
            return [*super().metrics, self.rec_tracker, self.kl_tracker]

        def deterministic(self):
            """A functional model: input -> decoder(mean) (what serving and reports use)."""
            inputs = keras.Input(shape=tuple(self.encoder.input.shape[1:]), name="inputs")
            return keras.Model(inputs, self.decoder(self.encoder(inputs)[0]), name="vae_mean")

        def get_config(self):
            return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
                    "decoder": keras.saving.serialize_keras_object(self.decoder), "beta": self.beta, "bce": self.bce}

        @classmethod
        def from_config(cls, config):
            config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
            config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
            return cls(**config)

    _VAE = VAE
    return VAE


@MODELS.register("vae", "Variational autoencoder: dense encoder -> mean, log-variance -> sample -> decoder; "
                 "loss reconstruction + beta * KL", tags=("autoencoder",))
def build_vae(model_cfg, info):
    import keras

    shape = tuple(info.input_shape)
    size, latent = math.prod(shape), int(model_cfg.latent_dim)
    hidden = [int(u) for u in model_cfg.hidden_units]
    act = str(model_cfg.activation)
    inputs = keras.Input(shape=shape)
    x = keras.layers.Flatten()(inputs)
    for u in hidden:
        x = keras.layers.Dense(u, activation=act)(x)
    mean = keras.layers.Dense(latent, name="z_mean")(x)
    log_var = keras.layers.Dense(latent, name="z_log_var")(x)
    encoder = keras.Model(inputs, [mean, log_var], name="encoder")
    lat = keras.Input(shape=(latent,))
    x = lat
    for u in reversed(hidden):
        x = keras.layers.Dense(u, activation=act)(x)
    x = keras.layers.Dense(size, activation=_out_activation(info))(x)
    decoder = keras.Model(lat, keras.layers.Reshape(shape)(x), name="decoder")
    model = vae_class()(encoder, decoder, float(model_cfg.beta), getattr(info, "bounded", False),
                        name="vae")
    model(keras.ops.zeros((1, *shape)))  # build
    return model


@MODELS.register("conv1d_ae", "1-D convolutional autoencoder for series windows: Conv1D + pooling down, "
                 "Conv1DTranspose up", tags=("autoencoder",))
def build_conv1d_ae(model_cfg, info):
    import keras

    from dlrun.errors import DlrunError

    shape = tuple(info.input_shape)
    steps, channels = shape
    filters = [int(f) for f in model_cfg.filters]
    if steps % (2 ** len(filters)):
        raise DlrunError(f"conv1d_ae halves the window {len(filters)} times: data.window ({steps}) must be a "
                         f"multiple of {2 ** len(filters)}")
    k, act = int(model_cfg.kernel_size), str(model_cfg.activation)
    inputs = keras.Input(shape=shape)
    x = inputs
    for f in filters:
        x = keras.layers.Conv1D(f, k, padding="same", activation=act)(x)
        x = keras.layers.MaxPooling1D(2)(x)
    z = keras.layers.Conv1D(int(model_cfg.latent_channels), k, padding="same",
                            activity_regularizer=_activity(model_cfg), name="latent")(x)
    encoder = keras.Model(inputs, z, name="encoder")
    lat = keras.Input(shape=tuple(z.shape[1:]))
    x = lat
    for f in reversed(filters):
        x = keras.layers.Conv1DTranspose(f, k, strides=2, padding="same", activation=act)(x)
    x = keras.layers.Conv1D(channels, k, padding="same")(x)
    decoder = keras.Model(lat, x, name="decoder")
    return _chain(encoder, decoder, shape, "conv1d_ae")

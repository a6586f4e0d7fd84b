"""GAN models for task=gan: a `GAN` keras.Model holding a `generator` and a `discriminator`,
trained by Keras' own fit (so checkpoints, parameter counts and weights cover both, and the
run's callbacks, strategies and mixed precision apply as for any model).

dcgan: noise -> Dense -> [Conv2DTranspose stride 2] x 2 -> sigmoid image; discriminator
Conv2D stride 2 x 2 -> logit. cgan: the class label is embedded and joined to the noise
(generator) and added as an extra image channel (discriminator). The output layers compute in
float32 under a mixed-precision policy (pixels and logits keep their precision).
"""

from __future__ import annotations

from dlrun.errors import DlrunError
from dlrun.registry import MODELS

LOSSES = ("bce", "wgan_gp")
# the adversarial game's settings (task.loss, gp_weight, d_steps, label_smoothing, instance_noise):
# GAN.compile arguments, saved with the model's compile config
GAME = ("gan_loss", "gp_weight", "d_steps", "label_smoothing", "instance_noise")


def _build(model_cfg, info, conditional: bool):
    import keras

    h, w, c = (int(d) for d in info.input_shape)
    if h % 4 or w % 4:
        raise DlrunError(f"{model_cfg.name}: image size {h}x{w} must be a multiple of 4", "e.g. data.upsample=2")
    latent, width = int(model_cfg.latent_dim), int(model_cfg.filters)
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
    img = L.Conv2DTranspose(c, 4, strides=2, padding="same", activation="sigmoid", dtype="float32")(x)
    generator = keras.Model(g_in if conditional else noise, img, name="generator")

    image = keras.Input(shape=(h, w, c), name="image")
    d_label = keras.Input(shape=(), dtype="int32", name="d_label")
    x = image
    if conditional:
        plane = L.Reshape((h, w, 1))(L.Embedding(classes, h * w)(d_label))
        x = L.Concatenate()([image, plane])
    x = L.LeakyReLU(0.2)(L.Conv2D(width, 4, strides=2, padding="same")(x))
    x = L.Dropout(float(model_cfg.dropout))(x)
    x = L.LeakyReLU(0.2)(L.Conv2D(width * 2, 4, strides=2, padding="same")(x))
    x = L.Flatten()(x)
    logit = L.Dense(1, dtype="float32")(x)
    discriminator = keras.Model([image, d_label] if conditional else image, logit, name="discriminator")
    model = gan_class()(generator, discriminator, name="cgan" if conditional else "dcgan")
    model(model.example_inputs(1))  # build
    return model


@MODELS.register("dcgan", "DCGAN: transposed-conv generator and conv discriminator (task=gan)", tags=("gan",))
def build_dcgan(model_cfg, info):
    return _build(model_cfg, info, conditional=False)


@MODELS.register("cgan", "Conditional DCGAN: class label joined to the noise and to the discriminator input",
                 tags=("gan",))
def build_cgan(model_cfg, info):
    return _build(model_cfg, info, conditional=True)


def gradient_penalty(critic, real, fake):
    """WGAN-GP's penalty: mean (||grad critic(x)|| - 1)^2 at random points between real and fake
    images (Gulrajani et al. 2017). A few lines of GradientTape: Keras has no such loss."""
    import tensorflow as tf

    eps = tf.random.uniform((tf.shape(real)[0], 1, 1, 1))
    mixed = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        score = critic(mixed)
    grads = tf.cast(tape.gradient(score, mixed), tf.float32)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return tf.reduce_mean(tf.square(norm - 1.0))


_GAN = None


def gan_class():
    """The GAN keras.Model subclass (made on first use: Keras is imported lazily).

    The two-player step of the Keras guide "Customizing what happens in fit()" (its GAN and
    WGAN-GP examples): `train_step` takes `d_steps` discriminator steps on a batch of real
    images (and their labels) and one generator step; `test_step` computes the same losses
    without updating (val_*). `compile(optimizer=..., d_optimizer=...)`: `optimizer` trains the
    generator (Keras wraps it in a LossScaleOptimizer under mixed_float16, and the
    discriminator's gets the same), `d_optimizer` the discriminator; the other compile
    arguments are the game's settings (GAME, from the task config), saved with the model. Losses are divided by the replica count, as Keras' own
    losses are, because the optimizers sum the gradients of all replicas.
    """
    global _GAN
    if _GAN is not None:
        return _GAN
    import keras
    import tensorflow as tf
    from keras.src.losses.loss import scale_loss_for_distribution  # what Keras' own losses use

    def bce(target: float, logits):
        return tf.reduce_mean(keras.losses.binary_crossentropy(tf.fill(tf.shape(logits), target), logits,
                                                               from_logits=True))

    @keras.saving.register_keras_serializable(package="dlrun")
    class GAN(keras.Model):
        def __init__(self, generator, discriminator, **kwargs):
            super().__init__(**kwargs)
            self.generator, self.discriminator = generator, discriminator
            self.conditional = len(generator.inputs) == 2
            self.latent_dim = int(generator.inputs[0].shape[-1])
            self.trackers = [keras.metrics.Mean(name=n) for n in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake")]
            self.d_optimizer = None
            self.game: dict = {}  # set by compile

        def example_inputs(self, n: int):
            z = keras.ops.zeros((n, self.latent_dim))
            return [z, keras.ops.zeros((n,), "int32")] if self.conditional else z

        def call(self, inputs, training=False):
            """noise (and labels) -> images: the generator."""
            return self.generator(inputs, training=training)

        def _generate(self, z, y, training):
            return self.generator([z, y] if self.conditional else z, training=training)

        def _score(self, x, y, training):
            return self.discriminator([x, y] if self.conditional else x, training=training)

        # -- compile and saving: a second optimizer --------------------------------------------
        def compile(self, optimizer, d_optimizer, gan_loss, gp_weight, d_steps, label_smoothing, instance_noise,
                    **kwargs):
            if gan_loss not in LOSSES:
                raise DlrunError(f"task.loss: unknown GAN loss '{gan_loss}'", f"valid: {', '.join(LOSSES)}")
            super().compile(optimizer=optimizer, **kwargs)
            d_opt = keras.optimizers.get(d_optimizer)
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                d_opt = keras.optimizers.LossScaleOptimizer(d_opt)
            self.d_optimizer = d_opt
            self.game = {"gan_loss": gan_loss, "gp_weight": float(gp_weight), "d_steps": int(d_steps),
                         "label_smoothing": float(label_smoothing), "instance_noise": float(instance_noise)}
            # built now, each for its own network (a backup restores their state into them)
            self.optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)

        def get_compile_config(self):
            config = super().get_compile_config()
            if self.d_optimizer is not None:
                inner = getattr(self.d_optimizer, "inner_optimizer", self.d_optimizer)
                config.update(self.game, d_optimizer=keras.saving.serialize_keras_object(inner))
            return config

        def compile_from_config(self, config):
            config = dict(config)
            d_optimizer = keras.saving.deserialize_keras_object(config.pop("d_optimizer"))
            game = {k: config.pop(k) for k in GAME}
            self.compile(d_optimizer=d_optimizer, **game, **keras.saving.deserialize_keras_object(config))

        def get_config(self):
            return {**super().get_config(), "generator": keras.saving.serialize_keras_object(self.generator),
                    "discriminator": keras.saving.serialize_keras_object(self.discriminator)}

        @classmethod
        def from_config(cls, config):
            for part in ("generator", "discriminator"):
                config[part] = keras.saving.deserialize_keras_object(config[part])
            return cls(**config)

        # -- training --------------------------------------------------------------------------
        @property
        def metrics(self):
            return list(self.trackers)

        def _d_losses(self, x, y, training: bool):
            """(loss, accuracy on real, accuracy on fake) of the discriminator on a batch."""
            z = tf.random.normal((tf.shape(x)[0], self.latent_dim))
            fake = self._generate(z, y, False)
            g = self.game
            noise = g["instance_noise"] if training else 0.0
            xr = x + noise * tf.random.normal(tf.shape(x))
            xf = fake + noise * tf.random.normal(tf.shape(fake))
            real_logit, fake_logit = self._score(xr, y, training), self._score(xf, y, training)
            if g["gan_loss"] == "wgan_gp":  # Wasserstein critic: score gap, plus the penalty on mixed images
                loss = tf.reduce_mean(fake_logit) - tf.reduce_mean(real_logit) + \
                    g["gp_weight"] * gradient_penalty(lambda v: self._score(v, y, training), xr, xf)
                # a critic's score has no sign: how often a real image scores above the fakes' mean
                # and a fake below the reals' mean
                real_cut, fake_cut = tf.reduce_mean(fake_logit), tf.reduce_mean(real_logit)
            else:
                loss = bce(1.0 - (g["label_smoothing"] if training else 0.0), real_logit) + bce(0.0, fake_logit)
                real_cut = fake_cut = 0.0
            acc_real = tf.reduce_mean(tf.cast(real_logit > real_cut, tf.float32))
            acc_fake = tf.reduce_mean(tf.cast(fake_logit < fake_cut, tf.float32))
            return loss, acc_real, acc_fake

        def _g_loss(self, y, training: bool):
            z = tf.random.normal((tf.shape(y)[0], self.latent_dim))
            logit = self._score(self._generate(z, y, training), y, False)
            return -tf.reduce_mean(logit) if self.game["gan_loss"] == "wgan_gp" else bce(1.0, logit)

        def _step(self, optimizer, network, loss_fn):
            with tf.GradientTape() as tape:
                out = loss_fn()
                loss = out[0] if isinstance(out, tuple) else out
                scaled = optimizer.scale_loss(scale_loss_for_distribution(loss))
            optimizer.apply(tape.gradient(scaled, network.trainable_variables), network.trainable_variables)
            return out

        def _track(self, d, g):
            d_loss, acc_real, acc_fake = d
            for tracker, value in zip(self.trackers, (d_loss, g, acc_real, acc_fake), strict=True):
                tracker.update_state(value)
            return {t.name: t.result() for t in self.trackers}

        def train_step(self, data):
            x, y = data
            for _ in range(self.game["d_steps"]):
                d = self._step(self.d_optimizer, self.discriminator, lambda: self._d_losses(x, y, True))
            g = self._step(self.optimizer, self.generator, lambda: self._g_loss(y, True))
            return self._track(d, g)

        def test_step(self, data):
            x, y = data
            return self._track(self._d_losses(x, y, False), self._g_loss(y, False))

    _GAN = GAN
    return GAN

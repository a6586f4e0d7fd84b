"""GAN task: DCGAN or conditional DCGAN on an image source (digits embedded by default).

The training loop is custom (two optimizers, discriminator steps per generator step), run
through the RunHandle: progress per epoch, both losses and the discriminator's accuracy on
real and fake images logged per epoch (train/*), a grid at the same fixed noise every
task.sample_every epochs, and the best generator kept by the Frechet distance on validation
images. Quality is measured with a small CNN classifier trained on the real training images
(its own test accuracy reported): the Frechet distance between its penultimate features of
generated and real test images (gan/frechet_distance) next to the real-train vs real-test
distance (the floor), and for cgan the share of generated images it labels as the class asked.
The served model is the generator: noise (and label) in, image pixels in [0, 1] out.
"""

from __future__ import annotations

import numpy as np

from dlrun.contract import Data, DataInfo, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

DATA.also_serves("gan", ("image",))


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = examples)."""
    from scipy import linalg

    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    mu, nu = a.mean(axis=0), b.mean(axis=0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    import warnings

    with warnings.catch_warnings():  # near-singular covariances (tiny sets) still give a usable root
        warnings.simplefilter("ignore")
        root = np.real(linalg.sqrtm(sa @ sb))
    return float(max(((mu - nu) ** 2).sum() + np.trace(sa + sb - 2 * root), 0.0))


@TASKS.register("gan", "GANs on images: DCGAN and conditional DCGAN, quality by a real-image classifier")
class GanTask(Task):
    name = "gan"

    def data(self, cfg, batch_size: int) -> Data:
        from dlrun.data.images import image_size, load_images, split_arrays, to_model_input

        if str(cfg.task.get("loss", "bce")) not in LOSSES:
            raise DlrunError(f"task.loss: unknown GAN loss '{cfg.task.loss}'", f"valid: {', '.join(LOSSES)}")

        src = load_images(cfg.data)
        if src.arrays is None:
            raise DlrunError(f"data source '{cfg.data.name}' streams tf.data splits; task=gan takes in-memory images",
                             "data=digits, mnist, fashion_mnist")
        split = split_arrays(src.arrays, cfg.task.split)
        size = image_size(cfg.data.get("image_size"))
        arrays = {}
        for s in ("train", "val", "test"):
            arrays[f"x_{s}"] = to_model_input(split[f"x_{s}"], src.scale, size)
            arrays[f"y_{s}"] = np.asarray(split[f"y_{s}"]).astype("int32")
        if cfg.trainer.fast:
            from dlrun.data.pipeline import fast_subset

            for s in ("train", "val", "test"):
                i = fast_subset(np.arange(len(arrays[f"y_{s}"])), int(cfg.trainer.fast_examples), int(cfg.trainer.seed))
                arrays[f"x_{s}"], arrays[f"y_{s}"] = arrays[f"x_{s}"][i], arrays[f"y_{s}"][i]
        info = DataInfo(name=str(cfg.data.name), input_shape=tuple(arrays["x_train"].shape[1:]), target="generation",
                        num_classes=len(src.class_names), class_names=list(src.class_names), source=src.source,
                        sizes={s: len(arrays[f"y_{s}"]) for s in ("train", "val", "test")})
        return Data(info, arrays=arrays, examples={"test": Examples(arrays["x_test"], arrays["y_test"])},
                    warnings=list(src.warnings))

    def objective(self, cfg, info: DataInfo) -> Objective:
        return Objective("frechet_distance", maximize=False)

    def build_model(self, cfg, info: DataInfo):
        from dlrun.models import build_model

        return build_model(cfg.model, info, task=self.name)

    # -- training -------------------------------------------------------------------------
    def fit(self, cfg, model, data: Data, run):
        import keras
        import tensorflow as tf

        from dlrun.training.compile import make_optimizer

        t, a = cfg.task, data.arrays
        gen, disc = model.get_layer("generator"), model.get_layer("discriminator")
        cond = isinstance(gen.input, list)
        latent = int(gen.input[0].shape[-1] if cond else gen.input.shape[-1])
        classes = int(data.info.num_classes)
        g_opt, d_opt = make_optimizer(cfg.trainer), make_optimizer(cfg.trainer)
        smooth, in_noise, d_steps = float(t.label_smoothing), float(t.instance_noise), int(t.d_steps)
        wgan, gp_weight = str(t.get("loss", "bce")) == "wgan_gp", float(t.get("gp_weight", 10.0))
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        seed = int(cfg.trainer.seed)
        tf.random.set_seed(seed)
        self.classifier = _classifier(a, classes, seed)
        n_fixed = 8 * 8
        fixed_z = np.random.default_rng(seed).normal(0, 1, (n_fixed, latent)).astype("float32")
        fixed_y = (np.arange(n_fixed) % classes).astype("int32")
        self.fixed_noise = fixed_z  # the same noise for every grid (tests check it)
        self.grids, self.noise_seen = {}, []

        def g_call(z, y, training):
            return gen([z, y], training=training) if cond else gen(z, training=training)

        def d_call(x, y, training):
            return disc([x, y], training=training) if cond else disc(x, training=training)

        @tf.function
        def d_step(x, y):
            n = tf.shape(x)[0]
            z = tf.random.normal((n, latent))
            with tf.GradientTape() as tape:
                fake = g_call(z, y, False)
                xr = x + in_noise * tf.random.normal(tf.shape(x))
                xf = fake + in_noise * tf.random.normal(tf.shape(fake))
                real_logit, fake_logit = d_call(xr, y, True), d_call(xf, y, True)
                if wgan:  # Wasserstein critic: score gap, plus the gradient penalty on mixed images
                    loss = tf.reduce_mean(fake_logit) - tf.reduce_mean(real_logit) + \
                        gp_weight * gradient_penalty(lambda v: d_call(v, y, True), xr, xf)
                else:
                    loss = bce(tf.fill(tf.shape(real_logit), 1.0 - smooth), real_logit) + \
                        bce(tf.zeros_like(fake_logit), fake_logit)
            d_opt.apply_gradients(zip(tape.gradient(loss, disc.trainable_variables), disc.trainable_variables, strict=True))
            # accuracy: a logit's sign for the standard GAN; for a critic (no sign), how often it
            # scores a real image above the fakes' mean and a fake below the reals' mean
            real_cut, fake_cut = (tf.reduce_mean(fake_logit), tf.reduce_mean(real_logit)) if wgan else (0.0, 0.0)
            acc_real = tf.reduce_mean(tf.cast(real_logit > real_cut, tf.float32))
            acc_fake = tf.reduce_mean(tf.cast(fake_logit < fake_cut, tf.float32))
            return loss, acc_real, acc_fake

        @tf.function
        def g_step(y):
            z = tf.random.normal((tf.shape(y)[0], latent))
            with tf.GradientTape() as tape:
                logit = d_call(g_call(z, y, True), y, False)
                loss = -tf.reduce_mean(logit) if wgan else bce(tf.ones_like(logit), logit)
            g_opt.apply_gradients(zip(tape.gradient(loss, gen.trainable_variables), gen.trainable_variables, strict=True))
            return loss

        batch = int(cfg.trainer.batch_size)
        ds = tf.data.Dataset.from_tensor_slices((a["x_train"], a["y_train"])).shuffle(
            len(a["y_train"]), seed=seed, reshuffle_each_iteration=True).batch(batch, drop_remainder=True)
        if cfg.trainer.limit_batches:
            ds = ds.take(int(cfg.trainer.limit_batches))
        epochs, every = int(cfg.trainer.epochs), max(1, int(t.sample_every))
        history: dict[str, list] = {k: [] for k in ("train/d_loss", "train/g_loss", "train/d_acc_real",
                                                    "train/d_acc_fake", "val/frechet_distance")}
        run.progress(epochs, "epoch")
        seen = 0
        for epoch in range(1, epochs + 1):
            sums, count = np.zeros(4), 0
            for x, y in ds:
                for _ in range(d_steps):
                    dl, ar, af = d_step(x, y)
                gl = g_step(y)
                sums += [float(dl), float(gl), float(ar), float(af)]
                count += 1
                seen += int(x.shape[0])
                if run.should_stop:
                    break
            means = sums / max(count, 1)
            fd = self._frechet(gen, cond, latent, a["x_val"], a["y_val"], seed)
            values = dict(zip(history, [*means, fd], strict=True))
            for k, v in values.items():
                history[k].append(float(v))
            run.log(epoch, values)
            run.advance(epoch, {"d_loss": means[0], "g_loss": means[1], "fd": fd})
            run.keep_best(model, fd, epoch)
            if epoch % every == 0 or epoch == epochs:
                self.noise_seen.append(fixed_z.copy())
                imgs = np.asarray(g_call(fixed_z, fixed_y, False))
                self.grids[epoch] = imgs
            if run.should_stop:
                break
        return run.fit_result(history, unit="epoch", seen=seen)

    def _frechet(self, gen, cond, latent, x_real, y_real, seed) -> float:
        z = np.random.default_rng(seed + 1).normal(0, 1, (len(x_real), latent)).astype("float32")
        fake = np.asarray(gen([z, y_real], training=False) if cond else gen(z, training=False))
        feats = self.features
        return frechet_distance(feats(fake), feats(x_real))

    def features(self, x):
        """The judge's penultimate features (what the Frechet distance compares)."""
        return self.classifier.feature_model.predict(x, verbose=0, batch_size=512)

    # -- serving and report ---------------------------------------------------------------
    def serving(self, cfg, model, data: Data) -> Served:
        gen = model.get_layer("generator")
        cond = isinstance(gen.input, list)
        latent = int(gen.input[0].shape[-1] if cond else gen.input.shape[-1])
        z = np.random.default_rng(0).normal(0, 1, (4, latent)).astype("float32")
        example = {"noise": z, "label": np.arange(4, dtype="int32")} if cond else z
        import keras

        inputs = [keras.Input(shape=(latent,), name="noise")]
        if cond:
            inputs.append(keras.Input(shape=(), dtype="int32", name="label"))
        out = gen(inputs if cond else inputs[0])
        served = keras.Model({i.name: i for i in inputs} if cond else inputs[0], {"image": out},
                             name=f"served_{model.name}")
        return Served(served, example=example, meta={"latent_dim": latent, "conditional": cond})

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun.plots.images import image_grid

        a, info = data.arrays, data.info
        gen = served.model
        cond = bool(served.meta["conditional"])
        latent = int(served.meta["latent_dim"])
        seed = int(cfg.trainer.seed)
        n = len(a["y_test"])
        z = np.random.default_rng(seed + 2).normal(0, 1, (n, latent)).astype("float32")
        asked = a["y_test"]
        fake = np.asarray(gen.predict({"noise": z, "label": asked} if cond else z, verbose=0)["image"])
        report = Report(primary="gan/frechet_distance")
        clf_acc = float((self.classifier.predict(a["x_test"], verbose=0).argmax(1) == a["y_test"]).mean())
        report.metrics["gan/classifier_accuracy"] = clf_acc
        report.metrics["gan/frechet_distance"] = frechet_distance(self.features(fake), self.features(a["x_test"]))
        report.metrics["gan/frechet_floor"] = frechet_distance(self.features(a["x_train"]), self.features(a["x_test"]))
        pred = self.classifier.predict(fake, verbose=0).argmax(1)
        if cond:
            report.metrics["gan/label_accuracy"] = float((pred == asked).mean())
        counts = np.bincount(pred, minlength=int(info.num_classes)) / len(pred)
        report.metrics["gan/classes_covered"] = float((counts > 0.02).sum())
        names = info.class_names or [str(i) for i in range(int(info.num_classes))]
        for epoch, imgs in getattr(self, "grids", {}).items():
            titles = [names[i % len(names)] if cond else "" for i in range(len(imgs))]
            report.figures[f"samples_epoch_{epoch:04d}.png"] = image_grid(imgs, titles, f"fixed noise, epoch {epoch}")
        return report


LOSSES = ("bce", "wgan_gp")


def gradient_penalty(critic, real, fake):
    """WGAN-GP's penalty: mean (||grad critic(x)|| - 1)^2 at random points between real and fake
    images (Gulrajani et al. 2017). A few lines of GradientTape: Keras has no such loss."""
    import tensorflow as tf

    eps = tf.random.uniform((tf.shape(real)[0], 1, 1, 1))
    mixed = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        score = critic(mixed)
    grads = tape.gradient(score, mixed)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return tf.reduce_mean(tf.square(norm - 1.0))


def _classifier(a: dict, classes: int, seed: int):
    """A small CNN on the real training images: the judge of generated images."""
    import keras

    keras.utils.set_random_seed(seed)
    shape = a["x_train"].shape[1:]
    inputs = keras.Input(shape=shape)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    # flatten, not global pooling: where the strokes are is what tells digits apart (pooled
    # features judged real 16x16 digits at 0.81 accuracy, flattened ones at 0.98)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    feats = keras.layers.Dense(64, activation="relu", name="features")(x)
    out = keras.layers.Dense(classes, activation="softmax")(feats)
    clf = keras.Model(inputs, out, name="judge")
    clf.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    clf.fit(a["x_train"], a["y_train"], epochs=30 if len(a["y_train"]) > 200 else 5, batch_size=64, verbose=0)
    clf.feature_model = keras.Model(inputs, feats)
    return clf

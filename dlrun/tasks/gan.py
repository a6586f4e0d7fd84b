"""GAN task: DCGAN or conditional DCGAN on an image source (digits embedded by default).

The model is a `GAN` keras.Model (dlrun/models/gan.py) whose train_step plays the two-player
game, so it trains through the runner's Keras fit like every other task: per epoch
`d_loss`, `g_loss` and the discriminator's accuracy on real and fake images, on training and
validation batches, and `val_frechet_distance` (the objective, minimised): the Frechet
distance between a judge classifier's penultimate features of generated and real validation
images, added to the epoch logs before the checkpoint, early stopping and pruning read them
(a conditional GAN adds `val_label_accuracy`: how often the judge reads the asked class).
A grid at the same fixed noise is drawn every task.sample_every epochs (plots/).

The judge, a small CNN trained on the real training images, is part of the data
(`GanData.judge`, trained in `data()` with the run's seed): `evaluate` needs nothing that
training learnt besides the served generator, so `dlrun eval run_id=` rebuilds the same judge
and scores the logged generator. Test metrics: the Frechet distance of generated vs real test
images (test/frechet_distance) next to real-train vs real-test (test/frechet_floor), the
judge's own accuracy (test/classifier_accuracy), and for cgan the share of generated images
it labels as the class asked (test/label_accuracy). The served model is the generator: noise
(and label) in, image pixels in [0, 1] out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrun.contract import Data, DataInfo, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

DATA.also_serves("gan", ("image",))

GRID = 8 * 8  # fixed-noise samples per grid


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


@dataclass
class GanData(Data):
    """Data plus the judge: a classifier of the real images whose features measure the generator."""

    judge: Any = None

    def features(self, x):
        """The judge's penultimate features (what the Frechet distance compares)."""
        return self.judge.feature_model.predict(np.asarray(x, "float32"), verbose=0, batch_size=512)

    def labels(self, x):
        return self.judge.predict(np.asarray(x, "float32"), verbose=0, batch_size=512).argmax(1)


def noise(seed: int, n: int, latent: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, latent)).astype("float32")


def generate(generator, z, labels, conditional: bool, served: bool = False) -> np.ndarray:
    """Images (numpy float32) of the generator network, or of the served model (dict in and out)."""
    if served:
        out = generator.predict({"noise": z, "label": labels} if conditional else z, verbose=0, batch_size=512)
        return np.asarray(out["image"], "float32")
    return np.asarray(generator.predict([z, labels] if conditional else z, verbose=0, batch_size=512), "float32")


@TASKS.register("gan", "GANs on images: DCGAN and conditional DCGAN, quality by a real-image classifier")
class GanTask(Task):
    name = "gan"

    def check(self, cfg, strategy) -> None:
        trainer = cfg.trainer
        if str(trainer.loop) != "fit":
            raise DlrunError(f"task=gan trains with trainer.loop=fit, not '{trainer.loop}'",
                             "the GAN's train_step already is the explicit two-player step (dlrun/models/gan.py)")
        if str(trainer.lr_schedule.name) == "reduce_on_plateau":
            raise DlrunError("task=gan cannot use trainer.lr_schedule=reduce_on_plateau",
                             "Keras' ReduceLROnPlateau lowers one optimizer and a GAN has two; use constant or cosine")

    def data(self, cfg, batch_size: int) -> GanData:
        import tensorflow as tf

        from dlrun.data.images import image_size, load_images, split_arrays, to_model_input
        from dlrun.models.gan import LOSSES

        if str(cfg.task.loss) not in LOSSES:
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
        seed = int(cfg.trainer.seed)
        if cfg.trainer.fast:
            from dlrun.data.pipeline import fast_subset

            for s in ("train", "val", "test"):
                i = fast_subset(np.arange(len(arrays[f"y_{s}"])), int(cfg.trainer.fast_examples), seed)
                arrays[f"x_{s}"], arrays[f"y_{s}"] = arrays[f"x_{s}"][i], arrays[f"y_{s}"][i]
        info = DataInfo(name=str(cfg.data.name), input_shape=tuple(arrays["x_train"].shape[1:]), target="generation",
                        num_classes=len(src.class_names), class_names=list(src.class_names), source=src.source,
                        sizes={s: len(arrays[f"y_{s}"]) for s in ("train", "val", "test")})
        # full batches only: the discriminator sees as many real as fake images in every step
        train = tf.data.Dataset.from_tensor_slices((arrays["x_train"], arrays["y_train"])).shuffle(
            len(arrays["y_train"]), seed=seed, reshuffle_each_iteration=True).batch(batch_size, drop_remainder=True)
        val = tf.data.Dataset.from_tensor_slices((arrays["x_val"], arrays["y_val"])).batch(batch_size)
        if int(train.cardinality()) == 0:
            raise DlrunError(f"task=gan: {len(arrays['y_train'])} training images make no full batch of {batch_size}",
                             "lower trainer.batch_size")
        return GanData(info, train=train.prefetch(tf.data.AUTOTUNE), val=val, arrays=arrays,
                       examples={"test": Examples(arrays["x_test"], arrays["y_test"])}, warnings=list(src.warnings),
                       judge=_judge(arrays, len(src.class_names), seed))

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("frechet_distance", maximize=False)

    def build_model(self, cfg, info: DataInfo):
        from dlrun.models import build_model
        from dlrun.training.compile import make_optimizer

        t, trainer = cfg.task, cfg.trainer
        model = build_model(cfg.model, info, task=self.name)
        steps, d_steps = info.steps_per_epoch or 1, int(t.d_steps)
        # the discriminator's optimizer steps d_steps times per batch: its schedule spans as many steps
        model.compile(optimizer=make_optimizer(trainer, steps), d_optimizer=make_optimizer(trainer, steps * d_steps),
                      gan_loss=str(t.loss), gp_weight=float(t.gp_weight), d_steps=d_steps,
                      label_smoothing=float(t.label_smoothing), instance_noise=float(t.instance_noise),
                      jit_compile=bool(trainer.jit_compile), steps_per_execution=int(trainer.steps_per_execution))
        return model

    # -- training -------------------------------------------------------------------------
    def fit(self, cfg, model, data: GanData, run):
        from dlrun.training.handle import keras_fit

        return keras_fit(cfg, model, data, run, first=(frechet_callback(cfg, data), samples_callback(cfg, data, run)))

    # -- serving and report ---------------------------------------------------------------
    def serving(self, cfg, model, data: Data) -> Served:
        import keras

        gen, cond, latent = model.generator, model.conditional, model.latent_dim
        example = {"noise": noise(0, 4, latent), "label": np.arange(4, dtype="int32")} if cond else noise(0, 4, latent)
        inputs = [keras.Input(shape=(latent,), name="noise")]
        if cond:
            inputs.append(keras.Input(shape=(), dtype="int32", name="label"))
        out = gen(inputs if cond else inputs[0])
        served = keras.Model({i.name: i for i in inputs} if cond else inputs[0], {"image": out},
                             name=f"served_{model.name}")
        return Served(served, example=example, meta={"latent_dim": latent, "conditional": cond})

    def evaluate(self, cfg, served: Served, data: GanData) -> Report:
        from dlrun.plots.images import image_grid

        a, info = data.arrays, data.info
        cond, latent = bool(served.meta["conditional"]), int(served.meta["latent_dim"])
        seed = int(cfg.trainer.seed)
        asked = a["y_test"]
        fake = generate(served.model, noise(seed + 2, len(asked), latent), asked, cond, served=True)
        real = data.features(a["x_test"])
        m = {"classifier_accuracy": float((data.labels(a["x_test"]) == asked).mean()),
             "frechet_distance": frechet_distance(data.features(fake), real),
             "frechet_floor": frechet_distance(data.features(a["x_train"]), real)}
        pred = data.labels(fake)
        if cond:
            m["label_accuracy"] = float((pred == asked).mean())
        counts = np.bincount(pred, minlength=int(info.num_classes)) / len(pred)
        m["classes_covered"] = float((counts > 0.02).sum())
        grid = fixed_grid(cfg, data, latent)
        names = info.class_names or [str(i) for i in range(int(info.num_classes))]
        titles = [names[int(i)] if cond else "" for i in grid[1]]
        figures = {"samples.png": image_grid(generate(served.model, *grid, cond, served=True), titles,
                                             "fixed noise, evaluated generator")}
        return Report(metrics=m, figures=figures, primary="frechet_distance").prefixed("test")


def fixed_grid(cfg, data: Data, latent: int):
    """(noise, labels) of the sample grids: the same for every epoch and for the evaluated generator."""
    classes = int(data.info.num_classes)
    return noise(int(cfg.trainer.seed), GRID, latent), (np.arange(GRID) % classes).astype("int32")


def frechet_callback(cfg, data: GanData):
    """val_frechet_distance after every epoch: generated images for the validation labels at a
    fixed noise against the real validation images, in the judge's features."""
    from dlrun.training.callbacks import epoch_metrics

    x, y = data.arrays["x_val"], data.arrays["y_val"]
    real = data.features(x)
    seed = int(cfg.trainer.seed)

    def compute(model):
        fake = generate(model.generator, noise(seed + 1, len(y), model.latent_dim), y, model.conditional)
        out = {"val_frechet_distance": frechet_distance(data.features(fake), real)}
        if model.conditional:  # the judge reads the asked digit: the conditional half of the game
            out["val_label_accuracy"] = float((data.labels(fake) == y).mean())
        return out

    return epoch_metrics(compute)


def samples_callback(cfg, data: GanData, run):
    """A Keras callback drawing the generator's images at one fixed noise every task.sample_every
    epochs and at the last, into <run folder>/plots/samples_epoch_NNNN.png (the runner logs that
    folder under plots/); `grids` keeps them (epoch -> images) for a look in tests."""
    import keras

    from dlrun.plots import close
    from dlrun.plots.images import image_grid

    every = max(1, int(cfg.task.sample_every))
    folder = run.workdir / "plots"
    names = data.info.class_names or [str(i) for i in range(int(data.info.num_classes))]

    class Samples(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.grids, self.noise = {}, None

        def on_epoch_end(self, epoch, logs=None):
            epoch += 1
            if epoch % every and epoch != self.params.get("epochs"):
                return
            model = self.model
            z, labels = fixed_grid(cfg, data, model.latent_dim)
            self.noise = z
            self.grids[epoch] = generate(model.generator, z, labels, model.conditional)
            if run.is_chief:
                titles = [names[int(i)] if model.conditional else "" for i in labels]
                fig = image_grid(self.grids[epoch], titles, f"fixed noise, epoch {epoch}")
                folder.mkdir(parents=True, exist_ok=True)
                fig.savefig(folder / f"samples_epoch_{epoch:04d}.png", dpi=100)
                close({"grid": fig})

    return Samples()


def _judge(a: dict, classes: int, seed: int):
    """A small CNN on the real training images: the judge of generated images. A measuring
    instrument, so float32 whatever trainer.precision says, and trained outside any strategy."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
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
    finally:
        keras.config.set_dtype_policy(policy)
    return clf

"""GAN task: Frechet distance, models, and one end-to-end cGAN smoke run through MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.registry import MODELS, TASKS
from dlrun.tasks.gan import frechet_distance


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (500, 6))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(6.0, rel=1e-3)  # |mean shift|^2, same covariance
    b = rng.normal(0, 1, (500, 6))
    assert frechet_distance(a, b) < frechet_distance(a, b * 2)


def test_generator_and_discriminator_shapes(compose):
    from dlrun.config import validate

    cfg = validate(compose("experiment=cgan", "trainer=smoke"))
    d = TASKS.get("gan")().data(cfg, 32)
    assert d.info.input_shape == (16, 16, 1)
    model = TASKS.get("gan")().build_model(cfg, d.info)
    z = np.zeros((3, cfg.model.latent_dim), "float32")
    labels = np.array([0, 1, 2], "int32")
    img = model.predict([z, labels], verbose=0)  # the model called is its generator
    logit = np.asarray(model.discriminator([img, labels]))
    assert img.shape == (3, 16, 16, 1) and logit.shape == (3, 1) and img.min() >= 0 and img.max() <= 1
    assert "gan" in MODELS.entry("dcgan").tags


def test_cgan_smoke_run_logs_losses_grids_at_fixed_noise_and_quality(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "experiment=cgan", "trainer=smoke", "trainer.epochs=2", "trainer.smoke=false",
              "trainer.fast=true", "trainer.limit_batches=2", "task.sample_every=1")
    run = runs()[0]
    m = run.data.metrics
    for key in ("train/d_loss", "train/g_loss", "train/d_acc_real", "train/d_acc_fake", "val/frechet_distance",
                "test/frechet_distance", "test/frechet_floor", "test/label_accuracy", "test/classifier_accuracy"):
        assert key in m, key
    hist = mlflow_client.get_metric_history(run.info.run_id, "train/g_loss")
    assert len(hist) == 2
    arts = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")]
    assert any("samples_epoch_0001" in a for a in arts) and any("samples_epoch_0002" in a for a in arts)
    # the logged generator takes noise vectors and the labels asked for, reloaded from MLflow
    import mlflow

    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    gen = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    z = np.random.default_rng(1).normal(0, 1, (3, 32)).astype("float32")
    images = gen.predict({"noise": z, "label": np.array([7, 1, 7], "int32")})
    pixels = np.stack([np.asarray(v, "float32").reshape(16, 16) for v in images["image"]])
    assert pixels.shape == (3, 16, 16) and pixels.min() >= 0 and pixels.max() <= 1
    assert not np.allclose(pixels[0], pixels[2])  # same label, different noise


def test_fixed_noise_is_the_same_for_every_grid(compose):
    from dlrun.config import validate
    from dlrun.tasks.gan import fixed_grid, frechet_callback, samples_callback
    from dlrun.training.handle import Handle, keras_fit

    cfg = validate(compose("experiment=gan", "trainer=smoke", "trainer.epochs=2", "trainer.smoke=false",
                           "trainer.limit_batches=1", "trainer.fast=true", "task.sample_every=1",
                           "trainer.checkpoint.enabled=false"))
    task = TASKS.get("gan")()
    d = task.data(cfg, 32)
    model = task.build_model(cfg, d.info)
    import tempfile
    from pathlib import Path

    run = Handle(cfg.trainer, Path(tempfile.mkdtemp()), task.objective(cfg, d.info), has_val=True)
    samples = samples_callback(cfg, d, run)
    fit = keras_fit(cfg, model, d, run, first=(frechet_callback(cfg, d), samples))
    assert len(fit.history["g_loss"]) == 2 and sorted(samples.grids) == [1, 2]
    # Keras names: validation keys are val_*, the tracker adds the train/ and val/ prefixes
    assert {"d_loss", "val_d_loss", "val_frechet_distance"} <= set(fit.history), sorted(fit.history)
    assert not any("/" in k for k in fit.history), sorted(fit.history)
    assert np.array_equal(samples.noise, fixed_grid(cfg, d, model.latent_dim)[0])  # the evaluated grid's noise too
    assert not np.array_equal(samples.grids[1], samples.grids[2])  # same noise, trained generator changed


def test_gradient_penalty_of_a_linear_critic_is_exact():
    import tensorflow as tf

    from dlrun.models.gan import gradient_penalty

    w = tf.constant(np.full((1, 4, 4, 1), 0.5, "float32"))  # ||grad|| = 0.5 * 4 = 2 everywhere
    real, fake = tf.random.uniform((3, 4, 4, 1)), tf.random.uniform((3, 4, 4, 1))
    assert float(gradient_penalty(lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3]), real, fake)) == pytest.approx(1.0)


def test_wasserstein_loss_trains_and_a_bad_loss_name_is_one_line(compose, run_dlrun, workdir):
    from dlrun.config import validate
    from dlrun.training.handle import Handle

    cfg = validate(compose("experiment=gan", "task.loss=wgan_gp", "task.d_steps=2", "trainer=smoke",
                           "trainer.epochs=2", "trainer.smoke=false", "trainer.limit_batches=2", "trainer.fast=true",
                           "trainer.checkpoint.enabled=false"))
    task = TASKS.get("gan")()
    d = task.data(cfg, 32)
    model = task.build_model(cfg, d.info)
    import tempfile
    from pathlib import Path

    run = Handle(cfg.trainer, Path(tempfile.mkdtemp()), task.objective(cfg, d.info), has_val=True)
    before = {part: [w.copy() for w in getattr(model, part).get_weights()] for part in ("generator", "discriminator")}
    h = task.fit(cfg, model, d, run).history
    assert len(h["d_loss"]) == 2 and np.isfinite(np.add(h["d_loss"], h["g_loss"])).all()
    for part, weights in before.items():  # both players took gradient steps (every layer moved)
        after = getattr(model, part).get_weights()
        moved = [not np.allclose(w0, w1) for w0, w1 in zip(weights, after, strict=True) if w0.ndim > 1]
        assert moved and all(moved), part
    from conftest import stderr_line

    line = stderr_line(run_dlrun("train", "experiment=gan", "trainer=smoke", "task.loss=hinge", expect=2))
    assert "unknown GAN loss 'hinge'" in line and "wgan_gp" in line

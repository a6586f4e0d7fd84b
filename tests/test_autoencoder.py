"""Autoencoder task: anomaly generator, threshold choice, models, noise, and one end-to-end
outlier run whose served model flags raw rows after reloading from MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.anomaly import manifold_frame
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks._autoencoder_report import choose_threshold, outlier_metrics
from dlrun.tasks.autoencoder import add_noise


def test_anomaly_generator_is_seeded_and_labels_the_requested_fraction():
    a, ya = manifold_frame(1000, fraction=0.1, seed=3)
    b, _ = manifold_frame(1000, fraction=0.1, seed=3)
    c, _ = manifold_frame(1000, fraction=0.1, seed=4)
    assert a.equals(b) and not a.equals(c)
    assert ya.sum() == 100 and list(a.columns[-1:]) == ["label"]
    assert "tabular" in DATA.entry("anomalies").tags
    with pytest.raises(DlrunError):
        manifold_frame(100, fraction=1.5)


def test_threshold_maximises_the_metric_on_a_hand_made_score_list():
    scores = [0.1, 0.2, 0.3, 0.4, 0.9, 1.0, 0.35]
    labels = [0, 0, 0, 0, 1, 1, 1]
    t, f1 = choose_threshold(scores, labels, "f1")
    # flagging > 0.325 catches all three anomalies and one normal (f1 6/7); > 0.65 catches two (f1 0.8)
    assert 0.3 < t < 0.35 and f1 == pytest.approx(6 / 7)
    t, acc = choose_threshold(scores, labels, "accuracy")
    assert acc == pytest.approx(6 / 7)
    m = outlier_metrics(scores, labels, 0.65)
    assert m["recall_anomaly"] == pytest.approx(2 / 3) and m["precision_anomaly"] == 1.0
    assert m["roc_auc"] == pytest.approx(11 / 12)
    with pytest.raises(DlrunError, match="valid: accuracy, f1"):
        choose_threshold(scores, labels, "auc")


def test_noise_is_clipped_for_images_and_has_the_asked_level():
    x = np.full((200, 8, 8, 1), 0.5, "float32")
    g = add_noise(x, "gaussian", 0.1, True, 0)
    assert g.min() >= 0 and g.max() <= 1 and abs(float((g - x).std()) - 0.1) < 0.01
    sp = add_noise(x, "salt_pepper", 0.2, True, 0)
    assert abs(float((sp != 0.5).mean()) - 0.2) < 0.02 and set(np.unique(sp)) == {0.0, 0.5, 1.0}


def _data(compose, *overrides):
    from dlrun.config import validate

    cfg = validate(compose("task=autoencoder", *overrides))
    return cfg, TASKS.get("autoencoder")().data(cfg, 32)


def test_outlier_mode_trains_on_normal_rows_only_and_keeps_both_in_val_and_test(compose):
    cfg, d = _data(compose, "experiment=ae_outlier")
    a = d.arrays
    assert a["a_train"].sum() == 0 and len(a["x_train"]) > 1000
    for s in ("val", "test"):
        assert 0 < a[f"a_{s}"].mean() < 0.2
    assert np.allclose(a["x_train"].mean(axis=0), 0, atol=0.1)


@pytest.mark.parametrize("model", ["dense_ae", "conv_ae"])
def test_models_reconstruct_the_input_shape(compose, model):
    cfg, d = _data(compose, f"model={model}", "trainer=smoke")
    task = TASKS.get("autoencoder")()
    m = task.build_model(cfg, d.info)
    x = d.arrays["x_test"][:3]
    y = m.predict(x, verbose=0)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1  # images: sigmoid pixels
    assert m.get_layer("encoder").output.shape[-1] == cfg.model.latent_dim


def test_image_outlier_needs_normal_classes_and_other_sources_serve(compose):
    with pytest.raises(DlrunError, match="normal_classes"):
        _data(compose, "task.mode=outlier")
    cfg, d = _data(compose, "task.mode=outlier", "task.normal_classes=[0,1]")
    assert d.arrays["a_train"].sum() == 0 and set(d.arrays["y_train"]) == {0, 1}
    cfg, d = _data(compose, "data=synthetic_series", "data.window=32")  # sequence sources serve too
    assert d.info.kind == "series" and d.info.input_shape == (32, 1) and not d.info.labelled
    with pytest.raises(DlrunError, match="valid: reconstruct, denoise, outlier"):
        _data(compose, "task.mode=colour")


def test_denoise_batches_pair_noisy_inputs_with_clean_targets(compose):
    _, d = _data(compose, "task.mode=denoise", "task.noise.level=0.2", "trainer=smoke")
    xb, yb = next(iter(d.train))
    assert xb.shape == yb.shape and float(np.abs(xb.numpy() - yb.numpy()).mean()) > 0.05


def test_outlier_run_serves_score_and_flag_for_raw_rows(run_dlrun, runs, workdir):
    run_dlrun("train", "experiment=ae_outlier", "trainer=smoke", "trainer.fast_examples=400")
    run = runs()[0]
    m = run.data.metrics
    for key in ("test/roc_auc", "test/pr_auc", "test/f1", "test/threshold", "test/mse",
                "baseline/isolation_forest/roc_auc", "baseline/pca/f1"):
        assert key in m, key
    rows, labels = manifold_frame(60, fraction=0.5, seed=9)
    rows.drop(columns="label").to_csv(workdir / "rows.csv", index=False)
    run_dlrun("predict", f"run_id={run.info.run_id}", "input=rows.csv", "output=pred.csv")
    import pandas as pd

    pred = pd.read_csv(workdir / "pred.csv")
    assert {"score", "anomaly"} <= set(pred.columns) and len(pred) == 60
    assert set(pred["anomaly"]) <= {0, 1}
    assert ((pred["score"] > m["test/threshold"]).astype(int) == pred["anomaly"]).all()


def test_vae_reparameterisation_shape_and_gradient_reach_both_encoder_outputs(compose):
    import tensorflow as tf

    cfg, d = _data(compose, "model=vae", "trainer=smoke", "model.latent_dim=3")
    model = TASKS.get("autoencoder")().build_model(cfg, d.info)
    x = tf.constant(d.arrays["x_train"][:16])
    mean, log_var = tf.zeros((16, 3)), tf.zeros((16, 3))
    with tf.GradientTape() as tape:
        tape.watch([mean, log_var])
        z = model.reparameterize(mean, log_var)
        out = tf.reduce_sum(z ** 2)
    assert z.shape == (16, 3)
    g_mean, g_var = tape.gradient(out, [mean, log_var])
    assert float(tf.reduce_sum(tf.abs(g_mean))) > 0 and float(tf.reduce_sum(tf.abs(g_var))) > 0
    rec, kl = model.terms(x, x, model(x, training=True))
    assert np.isfinite(float(rec)) and float(kl) >= 0
    hist = model.fit(x, x, epochs=2, verbose=0).history
    assert {"loss", "reconstruction", "kl"} <= set(hist)
    assert all(np.isfinite(v) for k in ("reconstruction", "kl") for v in hist[k])
    assert np.allclose(hist["loss"], np.add(hist["reconstruction"], hist["kl"]), rtol=1e-3)


def test_series_generator_injects_labelled_events_and_windows_carry_them(compose):
    from dlrun.data.anomaly import series_with_anomalies
    from dlrun.tasks.autoencoder import windows

    v, lab = series_with_anomalies(1000, events=5, kinds=["flatline"], seed=1)
    runs_ = np.flatnonzero(lab)
    assert len(runs_) >= 5 and np.ptp(v[runs_[0]:runs_[0] + 10]) == 0  # a flat-line is flat
    w, wl, starts = windows(v[:, None], lab, 48, 4)
    assert w.shape[1:] == (48, 1) and len(w) == len(wl) == len(starts)
    assert wl[starts.tolist().index(runs_[0] // 4 * 4)] == 1
    with pytest.raises(DlrunError, match="valid: spike, level_shift, flatline"):
        series_with_anomalies(kinds=["dip"])
    cfg, d = _data(compose, "experiment=ae_series_outlier")
    assert d.info.input_shape == (48, 1) and d.arrays["a_train"].sum() == 0 and d.arrays["a_test"].any()
    model = TASKS.get("autoencoder")().build_model(cfg, d.info)
    assert model.predict(d.arrays["x_test"][:2], verbose=0).shape == (2, 48, 1)
    with pytest.raises(DlrunError, match="needs labelled anomalies"):
        _data(compose, "experiment=ae_series_outlier", "data=synthetic_series")


def test_vae_preset_smoke_logs_both_loss_terms_prior_samples_and_latent_walk(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "experiment=vae", "trainer=smoke", "trainer.epochs=2", "trainer.smoke=false",
              "trainer.fast=true", "trainer.limit_batches=3")
    run = runs()[0]
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    for key in ("train/reconstruction", "train/kl", "val/reconstruction", "val/kl", "test/mse"):
        assert key in m and np.isfinite(m[key]) and m[key] >= 0, key
    assert len(mlflow_client.get_metric_history(run.info.run_id, "train/kl")) == 2  # both terms, every epoch
    plots = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/prior_samples.png", "plots/latent_walk.png"} <= plots

"""Sequence task: series sources, chronological split and scaling, windows, models, baselines,
presets, and `dlrun train task=sequence|rnn` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from dlrun.data import series as S
from dlrun.errors import DlrunError
from dlrun.registry import DATA, MODELS, TASKS
from dlrun.tasks.base import DataInfo

SEQUENCE_MODELS = ("simple_rnn", "lstm", "gru", "conv1d", "seq2seq", "mlp")
PRESETS = ("next_number", "timeseries", "seq2seq")


def cfg_of(**kw):
    return OmegaConf.create(kw)


def synthetic(**kw):
    base = dict(length=200, level=10.0, trend=0.05, season_periods=[20], season_amplitudes=[3.0], noise=0.5,
                seed=1, covariates=False, target="value")
    return S.synthetic_series(cfg_of(**{**base, **kw}))


def window_cfg(**kw):
    base = dict(window=4, horizon=1, stride=1, split={"val_size": 0.2, "test_size": 0.2}, scale="standard",
                features=None)
    return cfg_of(**{**base, **kw})


# -- sources ------------------------------------------------------------------------------


def test_registered_names():
    assert TASKS.canonical("rnn") == "sequence"
    assert {"synthetic_series", "arithmetic", "csv_series"} <= {e.name for e in DATA.entries() if "sequence" in e.tags}
    assert set(SEQUENCE_MODELS) <= {e.name for e in MODELS.entries() if "sequence" in e.tags}


def test_synthetic_series_is_deterministic_and_has_its_components():
    a, b, c = synthetic(), synthetic(), synthetic(seed=2)
    assert a.frame.equals(b.frame) and not a.frame.equals(c.frame)
    t = np.arange(200)
    flat = synthetic(trend=0.0, season_periods=[], season_amplitudes=[], noise=0.0).frame.value.to_numpy()
    assert np.allclose(flat, 10.0)
    line = synthetic(season_periods=[], season_amplitudes=[], noise=0.0).frame.value.to_numpy()
    assert np.allclose(line, 10.0 + 0.05 * t)
    wave = synthetic(trend=0.0, noise=0.0).frame.value.to_numpy()
    assert np.allclose(wave, 10.0 + 3.0 * np.sin(2 * np.pi * t / 20))
    noise = a.frame.value.to_numpy() - (10.0 + 0.05 * t + 3.0 * np.sin(2 * np.pi * t / 20))
    assert 0.4 < noise.std() < 0.6
    multi = synthetic(covariates=True).frame
    assert list(multi.columns) == ["value", "season_sin", "season_cos"]
    with pytest.raises(DlrunError, match="season_amplitudes"):
        synthetic(season_amplitudes=[1.0, 2.0])


def test_arithmetic_windows_are_the_course_samples():
    data_cfg = cfg_of(start=10, step=10, length=15, window=3, horizon=1, stride=1, scale="none", features=None,
                      split={"val_size": 0, "test_size": 6})
    parts, meta = S.prepare(S.arithmetic(data_cfg), data_cfg)
    train = parts["train"]
    assert train.x[..., 0].tolist() == [[10, 20, 30], [20, 30, 40], [30, 40, 50], [40, 50, 60], [50, 60, 70],
                                        [60, 70, 80]]
    assert train.y[:, 0].tolist() == [40, 50, 60, 70, 80, 90]
    assert len(parts["val"].x) == 0
    assert parts["test"].x[0, :, 0].tolist() == [70, 80, 90] and parts["test"].y_raw[:, 0].tolist() == [
        100, 110, 120, 130, 140, 150]


def test_windows_horizon_and_stride():
    x = np.arange(12, dtype=float)[:, None]
    xs, ys = S.make_windows(x, x[:, 0], window=3, horizon=2, stride=2)
    assert xs[..., 0].tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]]
    assert ys.tolist() == [[3, 4], [5, 6], [7, 8], [9, 10]]
    xs, ys = S.make_windows(x, x[:, 0], window=3, horizon=1, stride=1)
    assert len(xs) == 9 and ys[-1, 0] == 11


# -- CSV ----------------------------------------------------------------------------------


def write_csv(tmp_path, text, name="series.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def csv_cfg(path, **kw):
    base = dict(path=str(path), sep=",", time_column="date", target="sales", features=None, missing="error")
    return cfg_of(**{**base, **kw})


def test_csv_series_sorts_by_time_and_keeps_numeric_columns(tmp_path):
    path = write_csv(tmp_path, "date,sales,temp\n2024-01-03,3,30\n2024-01-01,1,10\n2024-01-02,2,20\n")
    series = S.csv_series(csv_cfg(path))
    assert series.frame.sales.tolist() == [1, 2, 3] and series.frame.temp.tolist() == [10, 20, 30]
    assert str(series.frame.index.dtype).startswith("datetime64") and series.target == "sales"
    only = S.csv_series(csv_cfg(path, time_column=None, features=["temp"]))
    assert only.frame.sales.tolist() == [3, 1, 2] and list(only.frame.columns) == ["temp", "sales"]


def test_csv_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DlrunError, match="does not exist") as e:
        S.csv_series(csv_cfg(tmp_path / "nope.csv"))
    assert "nope.csv" in str(e.value)
    path = write_csv(tmp_path, "date,sales,temp\n2024-01-01,1,10\n2024-01-02,oops,20\n")
    with pytest.raises(DlrunError, match=r"column 'sales' has a non-numeric value 'oops' at line 3"):
        S.csv_series(csv_cfg(path))
    with pytest.raises(DlrunError, match="no column 'price'") as e:
        S.csv_series(csv_cfg(path, target="price"))
    assert "date, sales, temp" in str(e.value) and "series.csv" in str(e.value)
    bad_time = write_csv(tmp_path, "date,sales\n2024-01-01,1\nyesterday,2\n", "t.csv")
    with pytest.raises(DlrunError, match=r"column 'date' is not a date/time at line 3"):
        S.csv_series(csv_cfg(bad_time))
    gap = write_csv(tmp_path, "date,sales\n2024-01-01,1\n2024-01-02,\n2024-01-03,3\n", "g.csv")
    with pytest.raises(DlrunError, match="empty value at line 3"):
        S.csv_series(csv_cfg(gap))
    assert S.csv_series(csv_cfg(gap, missing="interpolate")).frame.sales.tolist() == [1, 2, 3]
    with pytest.raises(DlrunError, match="data.path is required"):
        S.csv_series(OmegaConf.create({"path": "???", "target": "sales"}))


def test_split_is_chronological_and_scaled_on_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(1.0, 1.0, 100))  # drifts up: later parts have larger values
    lines = "\n".join(f"2024-01-01 {h // 60:02d}:{h % 60:02d},{v},{v * 2}" for h, v in enumerate(values))
    path = write_csv(tmp_path, "date,sales,other\n" + lines + "\n")
    parts, meta = S.prepare(S.csv_series(csv_cfg(path)), window_cfg(window=5, horizon=2))
    n_train, n_val, _ = (end - start for start, end in meta["bounds"].values())
    assert (n_train, n_val) == (60, 20)
    scaler = meta["scaler"]
    assert np.allclose(scaler.mean_, [values[:60].mean(), 2 * values[:60].mean()])
    assert np.allclose(scaler.scale_, [values[:60].std(), 2 * values[:60].std()])
    # training targets never reach past the training part; test targets are all in the test part
    assert parts["train"].y_raw.max() == values[:60].max()
    assert set(parts["test"].y_raw.ravel()) <= set(values[80:]) and parts["test"].y_raw[0, 0] == values[80]
    assert parts["val"].y_raw[0, 0] == values[60] and parts["val"].history[0].tolist() == values[55:60].tolist()
    # scaled training inputs are centred; unscale inverts the target's scaling
    assert abs(parts["train"].x[..., 0].mean()) < 0.2
    assert np.allclose(S.unscale(parts["test"].y, meta["target_affine"]), parts["test"].y_raw, atol=1e-4)
    mm, meta = S.prepare(S.csv_series(csv_cfg(path)), window_cfg(scale="minmax"))
    assert np.isclose(mm["train"].x[..., 0].min(), 0) and mm["test"].y.max() > 1  # test beyond the train range


def test_split_errors():
    with pytest.raises(DlrunError, match="fewer than window"):
        S.prepare(synthetic(length=20), window_cfg(window=15))
    with pytest.raises(DlrunError, match="unknown value 'robust'"):
        S.prepare(synthetic(), window_cfg(scale="robust"))
    with pytest.raises(DlrunError, match="no column 'nope'"):
        S.prepare(synthetic(), window_cfg(features=["nope"]))


# -- baselines ----------------------------------------------------------------------------


def test_baselines_on_a_known_series():
    history = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 40.0, 20.0]])
    assert S.naive_forecast(history, 1).tolist() == [[4.0], [20.0]]
    assert S.naive_forecast(history, 3).tolist() == [[4.0] * 3, [20.0] * 3]
    assert S.moving_average_forecast(history, 2, 2).tolist() == [[3.5, 3.5], [30.0, 30.0]]
    assert S.moving_average_forecast(history, 1, 4).tolist() == [[2.5], [20.0]]
    with pytest.raises(DlrunError, match="moving-average window 5"):
        S.moving_average_forecast(history, 1, 5)


# -- models -------------------------------------------------------------------------------


def model_cfg(compose, name, **kw):
    cfg = compose("task=sequence", f"model={name}")
    return OmegaConf.merge(cfg.model, kw)


def info_for(horizon, features=2):
    from dlrun.tasks.sequence import SeriesInfo

    return SeriesInfo(name="t", input_shape=(12, features), target="regression", output_dim=horizon,
                      target_index=0)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_each_model_outputs_the_horizon(compose, name):
    x = np.random.default_rng(0).normal(size=(5, 12, 2)).astype("float32")
    for horizon in (1, 4):
        model = MODELS.get(name)(model_cfg(compose, name), info_for(horizon))
        assert model(x).shape == (5, horizon)


def test_rnn_options_stack_and_wrap(compose):
    import keras

    cfg = model_cfg(compose, "gru", units=[8, 4], bidirectional=True, recurrent_dropout=0.2, dense_units=[3])
    model = MODELS.get("gru")(cfg, info_for(2))
    bi = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert len(bi) == 2 and bi[0].forward_layer.return_sequences and not bi[1].forward_layer.return_sequences
    assert bi[0].forward_layer.recurrent_dropout == 0.2
    seq = MODELS.get("lstm")(model_cfg(compose, "lstm", return_sequences=True, layers=2), info_for(1))
    assert seq.get_layer("lstm_1").return_sequences and seq.output_shape == (None, 1)


def test_residual_forecasts_from_the_last_value_and_reloads(compose, tmp_path):
    import keras

    model = MODELS.get("seq2seq")(model_cfg(compose, "seq2seq", residual=True), info_for(3))
    head = model.get_layer("head").layer
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    x = np.random.default_rng(1).normal(size=(4, 12, 2)).astype("float32")
    assert np.allclose(model.predict(x, verbose=0), np.repeat(x[:, -1, :1], 3, axis=1), atol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    assert np.allclose(keras.saving.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(DlrunError, match="residual needs the target"):
        MODELS.get("lstm")(model_cfg(compose, "lstm", residual=True),
                           DataInfo(name="t", input_shape=(12, 1), target="regression"))


# -- task and presets ---------------------------------------------------------------------


def task_data(compose, *overrides):
    from dlrun.config import validate

    cfg = validate(compose(*overrides))
    task = TASKS.get(cfg.task.name)()
    return cfg, task, task.data(cfg, 32)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_builds(compose, preset):
    cfg, task, data = task_data(compose, f"experiment={preset}", "trainer.fast=true")
    assert cfg.task.name == "sequence"
    model = task.build_model(cfg, data.info)
    assert model.output_shape == (None, cfg.data.horizon)
    steps = data.info.plan.step_scale is not None  # the window-relative channel of a differenced target
    assert data.info.input_shape == (cfg.data.window, 1 + steps)


def test_rnn_alias_composes_like_sequence(compose):
    a, b = compose("task=rnn"), compose("task=sequence")
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)


def test_task_data_is_deterministic_and_fast_mode_is_small(compose):
    _, _, a = task_data(compose, "task=sequence")
    _, _, b = task_data(compose, "task=sequence")
    assert np.array_equal(a.arrays["x_test"], b.arrays["x_test"])
    assert a.info.sizes == {"train": 810, "val": 180, "test": 180}
    _, _, fast = task_data(compose, "task=sequence", "trainer.fast=true")
    assert max(fast.info.sizes.values()) == cfg_fast_examples(compose)


def cfg_fast_examples(compose):
    return int(compose("task=sequence").trainer.fast_examples)


def test_next_number_report_has_the_course_table(compose):
    cfg, task, data = task_data(compose, "experiment=next_number")
    model = task.build_model(cfg, data.info)
    report = task.evaluate(cfg, task.serving(cfg, model, data), data)
    rows = report.tables["predictions"]
    assert [r["input"] for r in rows][:2] == ["[10, 20, 30]", "[70, 80, 90]"]
    assert [r["reference"] for r in rows] == [39.77, 100.0, 130.4, 231.74, 489.32]
    assert "predict/70_80_90" in report.metrics and report.primary == "test/mae"
    assert report.metrics["baseline/naive/mae"] == pytest.approx(10.0)  # 10 behind on a step-10 line
    assert report.metrics["baseline/moving_average/mae"] == pytest.approx(20.0)  # mean of 3 lags by 20
    assert [r["forecaster"] for r in report.tables["comparison"]] == [
        "simple_rnn (model)", "naive", "moving_average(3)"]
    assert {"forecast.png", "series.png"} <= set(report.figures)


def test_wrong_data_source_for_the_task(compose):
    with pytest.raises(DlrunError, match="does not fit task 'sequence'"):
        task_data(compose, "task=sequence", "data=insurance")


# -- end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("task,extra", [("sequence", ()), ("rnn", ("tracking.log_model=false",))])
def test_cli_train_smoke(run_dlrun, runs, mlflow_client, task, extra):
    run_dlrun("train", f"task={task}", "trainer=smoke", *extra)
    run = runs()[0]
    assert run.info.status == "FINISHED"
    assert {"test/mae", "baseline/naive/mae", "baseline/moving_average/mae"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/forecast.png" in artifacts

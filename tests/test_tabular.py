"""Tabular task units: the insurance generator, CSV loading, splits, models, losses, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.tabular import infer_problem, insurance_frame, insurance_oracle
from dlrun.errors import DlrunError
from dlrun.registry import DATA, MODELS, TASKS


def test_insurance_is_deterministic_and_like_the_course_file():
    a, _ = insurance_frame(1500, 42)
    b, _ = insurance_frame(1500, 42)
    c, _ = insurance_frame(1500, 7)
    assert a.equals(b) and not a.equals(c)
    assert list(a.columns) == ["speed", "age", "miles", "group"]
    assert set(a.group) == {0, 1, 2}
    assert a.age.between(18, 90).all() and a.speed.between(75, 210).all() and a.miles.between(3, 60).all()
    shares = np.bincount(a.group) / len(a)
    assert shares.min() > 0.2  # no class is rare


def test_insurance_classes_overlap_so_the_best_accuracy_is_about_080():
    frame, score = insurance_frame(100_000, 1)
    best = (insurance_oracle(score) == frame.group.to_numpy()).mean()
    assert 0.77 < best < 0.83


def test_risk_rises_with_speed_and_youth():
    frame, _ = insurance_frame(20_000, 3)
    many = frame[frame.group == 0]
    few = frame[frame.group == 1]
    assert many.speed.mean() > few.speed.mean() + 10
    assert (many.age < 25).mean() > (few.age < 25).mean()


def _data(compose, *overrides):
    cfg = compose(*overrides)
    from dlrun.config import validate

    cfg = validate(cfg)
    return cfg, TASKS.get(cfg.task.name)().data(cfg, 32)


def test_split_is_stratified_seeded_and_scaled_on_train(compose):
    cfg, d = _data(compose)
    a = d.arrays
    assert d.info.sizes == {"train": 960, "val": 240, "test": 300}
    for split in ("train", "test"):
        shares = np.bincount(a[f"y_{split}"]) / len(a[f"y_{split}"])
        overall = np.bincount(np.concatenate([a["y_train"], a["y_val"], a["y_test"]])) / 1500
        assert np.abs(shares - overall).max() < 0.02
    assert np.allclose(a["x_train"].mean(axis=0), 0, atol=1e-4)
    assert not np.allclose(a["x_test"].mean(axis=0), 0, atol=1e-5)
    _, again = _data(compose)
    assert np.array_equal(again.arrays["x_test"], a["x_test"])
    _, other = _data(compose, "task.split.seed=1")
    assert not np.array_equal(other.arrays["x_test"], a["x_test"])
    assert d.info.target == "multiclass" and d.info.num_classes == 3


@pytest.mark.parametrize(("name", "target", "classes"), [
    ("iris", "multiclass", 3), ("wine", "multiclass", 3), ("breast_cancer", "binary", 2), ("diabetes", "regression", None),
])
def test_bundled_sklearn_sets(compose, name, target, classes):
    _, d = _data(compose, f"data={name}")
    assert d.info.target == target and d.info.num_classes == classes


def test_csv_with_categorical_column(compose, tmp_path):
    f = tmp_path / "cars.csv"
    rows = ["speed;colour;age;group"] + [f"{100 + i};{'red' if i % 2 else 'blue'};{20 + i % 50};{i % 3}"
                                         for i in range(90)]
    f.write_text("\n".join(rows) + "\n")
    cfg, d = _data(compose, "data=csv", f"data.path={f}", "data.sep=';'", "data.target=group")
    assert d.info.target == "multiclass" and d.info.num_classes == 3
    assert d.info.input_shape == (4,)  # speed, age, two one-hot colour columns
    assert any("colour" in n for n in d.info.feature_names)


def test_csv_regression_is_inferred(compose, tmp_path):
    f = tmp_path / "r.csv"
    rng = np.random.default_rng(0)
    x = rng.random(100)
    f.write_text("x,y\n" + "\n".join(f"{a:.4f},{2 * a + 0.1:.4f}" for a in x) + "\n")
    _, d = _data(compose, "data=csv", f"data.path={f}", "data.target=y")
    assert d.info.target == "regression"
    assert infer_problem(d.examples["train"].rows.y) == "regression"


@pytest.mark.parametrize(("content", "needle"), [
    (None, "does not exist"),
    ("", "is empty"),
    ("a,b\n1,2\n3,4\n", "no column 'group'"),
    ("a,group\n1,0\n2,1\n3,0\nx7,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n", "column 'a' has a non-numeric value 'x7' at line 5"),
])
def test_bad_csv_files_name_the_file_and_problem(compose, tmp_path, content, needle):
    f = tmp_path / "bad.csv"
    if content is not None:
        f.write_text(content)
    with pytest.raises(DlrunError) as e:
        _data(compose, "data=csv", f"data.path={f}", "data.target=group")
    assert needle in str(e.value) and "bad.csv" in str(e.value)
    if "no column" in needle:
        assert "columns: a, b" in str(e.value)


def test_course_models_have_the_course_parameter_counts(compose):
    from dlrun.models import build_model

    cfg, d = _data(compose, "experiment=insurance")
    assert build_model(cfg.model, d.info, "tabular").count_params() == 353
    cfg, d = _data(compose, "experiment=binary_dummy")
    model = build_model(cfg.model, d.info, "tabular")
    assert model.count_params() == 5569
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert d.info.sizes["test"] == 100


def test_mismatched_loss_and_model_are_errors(compose):
    from dlrun.models import build_model

    cfg, d = _data(compose, "model.loss=mse")
    with pytest.raises(DlrunError, match="model.loss 'mse' does not match a multiclass target"):
        build_model(cfg.model, d.info, "tabular")
    from omegaconf import OmegaConf

    other_task = next(e for e in MODELS.entries() if e.tags and "tabular" not in e.tags)
    with pytest.raises(DlrunError, match=f"model '{other_task.name}' does not fit task 'tabular'"):
        build_model(OmegaConf.create({"name": other_task.name}), d.info, "tabular")


def test_registry_unknown_name_lists_valid():
    with pytest.raises(DlrunError) as e:
        DATA.get("irs")
    assert "iris" in str(e.value)


def test_baselines_beat_chance_and_report_side_by_side(compose):
    from dlrun.tasks.tabular import baselines

    cfg, d = _data(compose)
    a = d.arrays
    out = baselines(cfg, d.info, a["x_train"], a["y_train"], a["x_test"], a["y_test"])
    assert set(out) == {"linear", "random_forest"}
    for m in out.values():
        assert 0.6 < m["accuracy"] < 0.9


def test_data_for_another_task_is_an_error(compose):
    with pytest.raises(DlrunError, match="data source 'digits' does not fit task 'tabular'"):
        _data(compose, "data=digits")


def test_no_validation_split(compose):
    _, d = _data(compose, "task.split.val_size=0")
    assert d.val is None and d.info.sizes["val"] == 0 and d.info.sizes["train"] == 1200


def _csv(tmp_path, text):
    f = tmp_path / "t.csv"
    f.write_text(text)
    return f


def test_csv_empty_feature_cell_is_named_with_missing_error(compose, tmp_path):
    rows = "a,b,group\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(20)) + "21,,1\n"
    f = _csv(tmp_path, rows)
    with pytest.raises(DlrunError, match=r"column 'b' has an empty value at line 22"):
        _data(compose, "data=csv", f"data.path={f}", "data.target=group", "data.missing=error")


def _holey(tmp_path, n=60):
    """A table with empty numeric and string cells: x empty in every 5th row, colour in every 7th."""
    rows = ["x,colour,group"]
    for i in range(n):
        x = "" if i % 5 == 0 else str(i % 11)
        colour = "" if i % 7 == 0 else ("red", "blue")[i % 2]
        rows.append(f"{x},{colour},{i % 2}")
    return _csv(tmp_path, "\n".join(rows) + "\n")


def test_empty_cells_are_imputed_inside_the_model_or_dropped(compose, tmp_path):
    f = _holey(tmp_path)
    cfg, d = _data(compose, "data=csv", f"data.path={f}", "data.target=group", "task.split.val_size=0")
    info = d.info
    assert info.feature_names == ["x", "x missing", "colour=<missing>", "colour=blue", "colour=red"]
    assert {r["column"]: r["empty"] for r in info.empty_cells} == {"x": 12, "colour": 9}
    x = d.arrays["x_train"]
    assert np.isfinite(x).all()
    from dlrun.data.preprocess import columns_of, transform

    # the fitted model answers raw cells: an empty number -> the training median (scaled) and
    # its indicator; an empty or unseen string -> the <missing> slot
    raw = {"x": np.array([[np.nan], [3.0]], "float32"), "colour": np.array([[""], ["green"]], object)}
    out = transform(d.preprocess, raw)
    assert out[:, 1].tolist() == [1.0, 0.0] and out[:, 2].tolist() == [1.0, 1.0] and np.isfinite(out).all()
    assert columns_of(__import__("pandas").DataFrame({"x": [1.0], "colour": [None]}), ["x", "colour"])["colour"][0, 0] == ""
    _, dropped = _data(compose, "data=csv", f"data.path={f}", "data.target=group", "data.missing=drop")
    assert sum(dropped.info.sizes.values()) == 60 - 12 - 9 + 2  # rows 0 and 35 are empty in both
    assert any("row(s) with an empty feature cell left out" in w for w in dropped.warnings)
    with pytest.raises(DlrunError, match="data.missing: unknown value 'fill'"):
        _data(compose, "data=csv", f"data.path={f}", "data.target=group", "data.missing=fill")


def test_predict_answers_raw_rows_with_empty_cells(run_dlrun, runs, workdir, tmp_path):
    f = _holey(tmp_path)
    run_dlrun("train", "data=csv", f"data.path={f}", "data.target=group", "trainer.epochs=2", "trainer.progress=false")
    (run,) = runs()
    assert run.data.metrics["data/empty_cells/x"] == 12 and run.data.metrics["data/empty_cells/colour"] == 9
    rows = tmp_path / "rows.csv"
    rows.write_text("x,colour\n,\n4,red\n,green\n")
    out = workdir / "answers.csv"
    run_dlrun("predict", f"run_id={run.info.run_id}", f"input={rows}", f"output={out}")
    import pandas as pd

    answers = pd.read_csv(out)
    assert len(answers) == 3 and answers.filter(like="probability").notna().all().all()


def test_csv_categorical_numeric_column_is_one_hot(compose, tmp_path):
    rows = "zip,x,group\n" + "".join(f"{1000 + i % 3},{i},{i % 2}\n" for i in range(30))
    f = _csv(tmp_path, rows)
    _, d = _data(compose, "data=csv", f"data.path={f}", "data.target=group", "data.categorical=[zip]")
    assert sum("zip" in n for n in d.info.feature_names) == 3 and d.info.input_shape == (4,)


def test_csv_regression_on_text_target_is_an_error(compose, tmp_path):
    f = _csv(tmp_path, "x,label\n" + "".join(f"{i},{'hi' if i % 2 else 'lo'}\n" for i in range(20)))
    with pytest.raises(DlrunError, match="not numeric"):
        _data(compose, "data=csv", f"data.path={f}", "data.target=label", "data.problem=regression")


def test_custom_loop_trains_without_keras_fit(compose, monkeypatch, tmp_path):
    """trainer.loop=custom is the GradientTape loop, not Keras fit under another name: with
    Model.fit disabled it still trains (the loss falls) and runs the run's callbacks."""
    import keras

    from dlrun.config import validate
    from dlrun.training.handle import Handle, keras_fit

    cfg = validate(compose("trainer.loop=custom", "trainer.epochs=4", "tracking=off", "trainer.progress=false"))
    task = TASKS.get("tabular")()
    data = task.data(cfg, 32)
    model = task.build_model(cfg, data.info)

    def no_fit(*args, **kwargs):
        raise AssertionError("Keras fit was called")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    epochs = []
    run = Handle(cfg.trainer, tmp_path, task.objective(cfg, data.info), has_val=True,
                 log_epoch=lambda epoch, logs: epochs.append(epoch))
    run.attach(model)
    fit = keras_fit(cfg, model, data, run)
    run.close()
    assert epochs == [0, 1, 2, 3]
    loss = fit.history["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0]
    assert fit.best_value == max(fit.history["val_accuracy"])  # the objective is maximised


def test_a_network_that_loses_to_a_baseline_on_validation_says_so(run_dlrun, runs):
    """One epoch at a learning rate that cannot move the weights: the untrained network loses to
    logistic regression and the forest on the validation split, one warning line names the best
    of them with both numbers, the run carries it, and the test report is still there."""
    proc = run_dlrun("train", "trainer.epochs=1", "trainer.learning_rate=1e-7", "trainer.progress=false")
    line = next(ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines()
                if "the network loses to the" in ln)
    assert "baseline on the validation split: accuracy" in line and "; try " in line
    (run,) = runs()
    assert line.split("warning: ")[-1].strip() in run.data.tags["dlrun.warnings"]
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics
    assert "baseline/linear/validation" not in run.data.metrics  # the validation score is not a test metric

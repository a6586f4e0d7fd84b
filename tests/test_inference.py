"""The run contract's promise to users (issue 6): the model a run logs takes the raw inputs they
have and answers in their units; `dlrun predict` and `dlrun eval` on other files give the same
answers as the MLflow pyfunc model, and an eval on other data never touches the run's test/*."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import stderr_line


def _cars(n: int, seed: int) -> pd.DataFrame:
    """A header-less, ';'-separated table as public data sets often come: a string category, two
    numbers, and a class that depends on all three."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "blue", "green"], n)
    power = rng.uniform(50, 250, n).round(1)
    weight = rng.uniform(800, 2000, n).round(0)
    score = power / 100 - weight / 1000 + np.where(colour == "red", 0.8, 0.0)
    label = np.where(score > 0.6, "fast", "slow")
    return pd.DataFrame({"c0": colour, "c1": power, "c2": weight, "c3": label})


def _run_id(runs):
    (run,) = [r for r in runs() if r.info.status == "FINISHED"]
    return run


def test_tabular_headerless_csv_predict_eval_and_pyfunc_agree(run_dlrun, runs, mlflow_client, workdir):
    train, other = workdir / "cars.csv", workdir / "other.csv"
    _cars(400, 0).to_csv(train, sep=";", header=False, index=False)
    _cars(120, 1).to_csv(other, sep=";", header=False, index=False)
    run_dlrun("train", "data=csv", f"data.path={train}", "data.header=false", "data.target=3",
              "trainer.epochs=15", "trainer.progress=false")
    run = _run_id(runs)
    assert run.data.params["data.sep"] == "auto"  # ';' sniffed: the shell-safe default
    test_before = {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
    assert test_before["test/accuracy"] > 0.75  # a learnable rule, not chance (0.5-0.6)

    # predict: rows of a header-less file without the target, answers beside them
    rows = _cars(30, 2)
    rows.drop(columns="c3").to_csv(workdir / "new.csv", sep=";", header=False, index=False)
    run_dlrun("predict", f"run_id={run.info.run_id}", "input=new.csv", "output=answers.csv")
    answers = pd.read_csv(workdir / "answers.csv")
    assert list(answers.columns[:3]) == ["c0", "c1", "c2"]
    assert set(answers["predicted_c3"]) <= {"fast", "slow"}  # the answer is named after the target column
    assert np.allclose(answers[["probability_fast", "probability_slow"]].sum(axis=1), 1.0, atol=1e-5)

    # the MLflow model (what mlflow models serve runs) gives the same answers for the same rows
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    served = pyfunc.predict(rows.drop(columns="c3"))
    assert list(served["label"]) == list(answers["predicted_c3"])
    assert np.allclose(served["probability_fast"], answers["probability_fast"], atol=1e-6)

    # eval on another labelled file: every row scored, under eval/other/*, with its dataset
    run_dlrun("eval", f"run_id={run.info.run_id}", "input=other.csv")
    after = mlflow_client.get_run(run.info.run_id)
    assert after.info.status == "FINISHED"
    assert {k: v for k, v in after.data.metrics.items() if k.startswith("test/")} == test_before
    truth = _cars(120, 1)["c3"]
    expected = float((pyfunc.predict(_cars(120, 1).drop(columns="c3"))["label"] == truth).mean())
    assert after.data.metrics["eval/other/accuracy"] == pytest.approx(expected)
    contexts = [[t.value for t in i.tags if t.key == "mlflow.data.context"][0] for i in after.inputs.dataset_inputs]
    assert "evaluation" in contexts and contexts.count("testing") == 1
    # data.path= works the same way (the run's own config is the base, not the defaults)
    run_dlrun("eval", f"run_id={run.info.run_id}", f"data.path={other}")
    # a misspelled key is checked against the run's config
    line = stderr_line(run_dlrun("eval", f"run_id={run.info.run_id}", "data.pth=x.csv", expect=2))
    assert "data.pth: not a key of this run's config" in line and "path" in line


def test_regression_answers_in_the_targets_units(run_dlrun, runs, workdir):
    rng = np.random.default_rng(3)
    area = rng.uniform(40, 200, 500).round(1)
    rooms = rng.integers(1, 6, 500)
    price = 2000 * area + 15000 * rooms + rng.normal(0, 5000, 500)
    pd.DataFrame({"area": area, "rooms": rooms, "price": price.round(0)}).to_csv(workdir / "flats.csv", index=False)
    run_dlrun("train", "data=csv", "data.path=flats.csv", "data.target=price", "trainer.epochs=40",
              "trainer.progress=false")
    run = _run_id(runs)
    pd.DataFrame({"area": [50.0, 150.0], "rooms": [2, 4]}).to_csv(workdir / "ask.csv", index=False)
    run_dlrun("predict", f"run_id={run.info.run_id}", "input=ask.csv", "output=price.csv")
    pred = pd.read_csv(workdir / "price.csv")["predicted_price"].to_numpy()
    truth = np.array([2000 * 50 + 15000 * 2, 2000 * 150 + 15000 * 4])
    assert np.all(np.abs(pred - truth) < 0.25 * truth), pred  # money, not standardised values
    assert run.data.metrics["test/rmse"] < 0.5 * price.std()


def test_image_folder_and_series_csv_predict(run_dlrun, runs, workdir):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("photos", 24), ("new", 4)):
        for name, value in (("dark", 40), ("light", 210)):
            (workdir / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(value, 20, (12, 12, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(workdir / split / name / f"{i}.png")
    run_dlrun("train", "task=cnn", "data=folder", "data.path=photos", "data.image_size=[12,12]",
              "trainer.epochs=8", "trainer.progress=false")
    run = _run_id(runs)
    run_dlrun("predict", f"run_id={run.info.run_id}", "input=new", "output=labels.csv")
    labels = pd.read_csv(workdir / "labels.csv")
    assert len(labels) == 8 and set(labels.columns) >= {"file", "label", "probability_dark"}
    guessed = labels["file"].str.contains("/light/").map({True: "light", False: "dark"})
    assert (labels["label"] == guessed).mean() >= 0.75  # dark vs light images: an easy rule
    run_dlrun("eval", f"run_id={run.info.run_id}", "input=new")
    assert "eval/new/accuracy" in runs()[0].data.metrics

    series = workdir / "sales.csv"
    months = pd.date_range("2015-01-01", periods=96, freq="MS")
    value = 100 + np.arange(96) + 20 * np.sin(2 * np.pi * np.arange(96) / 12)
    pd.DataFrame({"month": months.strftime("%Y-%m-%d"), "sales": value.round(1)}).to_csv(series, index=False)
    run_dlrun("train", "task=sequence", "data=csv_series", f"data.path={series}", "data.target=sales",
              "data.window=12", "trainer.epochs=3", "trainer.progress=false")
    seq = [r for r in runs() if r.data.tags.get("dlrun.task") == "sequence"][0]
    assert "baseline/seasonal_naive/mae" in seq.data.metrics  # monthly dates: season 12 found
    run_dlrun("predict", f"run_id={seq.info.run_id}", f"input={series}", "output=forecast.csv")
    forecast = pd.read_csv(workdir / "forecast.csv")
    assert len(forecast) == 96 - 12 + 1 and "forecast_t+1" in forecast.columns
    assert forecast["forecast_t+1"].between(50, 250).all()  # sales units, not scaled values

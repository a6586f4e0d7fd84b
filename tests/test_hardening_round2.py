"""Hardening round 2 (issue 23) through the CLI, in process: a checkpoint evaluated as another
task or data (item 5), predict's answers beside rows that hold the truth (item 7), and the
smaller messages of item 10 (file encodings, headerless files, deleted experiments, malformed
detection CSVs). Resume (items 1-4) is in test_resume_edges.py."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from conftest import stderr_line


def _run_folder(shared):
    (folder,) = [p.parent for p in shared.workdir.glob("outputs/*/*/best.keras")]
    return folder


def test_item5_a_checkpoint_is_checked_against_the_task_and_data_before_it_runs(shared_run):
    shared = shared_run("tabular")
    folder = _run_folder(shared)
    rel = folder.relative_to(shared.workdir)
    line = stderr_line(shared.run_dlrun("eval", f"checkpoint={rel}/best.keras", "task=cnn", expect=2))
    assert f"checkpoint '{rel}/best.keras' was trained by task=tabular" in line and "not task=image" in line
    assert f"dlrun eval run_dir={rel}" in line
    line = stderr_line(shared.run_dlrun("eval", f"checkpoint={rel}/served/model.keras", "task=tabular",
                                        "data=breast_cancer", expect=2))
    assert "is a served model (raw inputs in, preprocessing inside)" in line and f"run_dir={rel}" in line
    # the same files away from their run folder: their inputs tell
    shutil.copy(folder / "best.keras", shared.workdir / "net.keras")
    shutil.copy(folder / "served" / "model.keras", shared.workdir / "served_copy.keras")
    line = stderr_line(shared.run_dlrun("eval", "checkpoint=net.keras", "task=cnn", expect=2))
    assert "checkpoint 'net.keras' expects 3 features; data 'digits' gives (8, 8, 1)" in line
    line = stderr_line(shared.run_dlrun("eval", "checkpoint=served_copy.keras", "task=tabular", "data=breast_cancer",
                                        expect=2))
    assert "takes named inputs (" in line and "a served model" in line


def test_item7_predict_answers_never_share_a_name_with_the_rows_and_the_truth_is_scored(shared_run):
    shared = shared_run("tabular")
    from dlrun.data.tabular import insurance_frame

    rows, _ = insurance_frame(40, 7)  # speed, age, miles and the true group
    rows["probability_0"] = 1.0  # a column of the user's that an answer would have taken
    rows.to_csv(shared.workdir / "rows.csv", index=False)
    proc = shared.run_dlrun("predict", f"run_id={shared.run.info.run_id}", "input=rows.csv", "output=answers.csv")
    assert "Warning" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
    out = pd.read_csv(shared.workdir / "answers.csv")
    assert list(out.columns) == ["speed", "age", "miles", "group", "probability_0", "predicted_group",
                                 "predicted_probability_0", "probability_1", "probability_2"]
    assert (out["probability_0"] == 1.0).all()  # the user's column, untouched
    accuracy = float((out["predicted_group"] == out["group"]).mean())
    assert f"the file holds the true answers: accuracy {accuracy:.4g} on 40 rows" in " ".join(proc.stdout.split())
    # the served model's own names (MLflow pyfunc, mlflow models serve) are unchanged
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{shared.workdir}/mlflow.db")
    served = mlflow.pyfunc.load_model(f"runs:/{shared.run.info.run_id}/model").predict(rows[["speed", "age", "miles"]])
    assert list(served.columns) == ["label", "probability_0", "probability_1", "probability_2"]
    assert list(served["label"].astype(int)) == list(out["predicted_group"])


def test_item10_encodings_headerless_files_deleted_experiments_and_detection_csvs(run_dlrun, runs, workdir,
                                                                                   mlflow_client):
    rng = np.random.default_rng(0)
    text = "a,b,y,drink\n" + "".join(f"{a:.3f},{b:.3f},{'oui' if a > b else 'non'},{'café' if i % 2 else 'thé'}\n"
                                     for i, (a, b) in enumerate(rng.normal(size=(200, 2))))
    (workdir / "latin.csv").write_bytes(text.encode("latin-1"))
    common = ("train", "trainer=smoke", "data=csv", "data.path=latin.csv", "data.target=y")
    line = stderr_line(run_dlrun(*common, expect=2))
    assert "CSV file 'latin.csv' is not utf-8 text: line 2 has byte 0xe9" in line and "data.encoding=latin-1" in line
    (failed,) = runs()
    assert failed.info.status == "FAILED" and "not utf-8 text: line 2" in failed.data.tags["dlrun.error"]
    run_dlrun(*common, "data.encoding=latin-1", "tracking.experiment=gone")
    run = runs()[0]
    assert run.info.status == "FINISHED"
    # a deleted experiment: MLflow's reason, and how to go on with dlrun
    mlflow_client.delete_experiment(run.info.experiment_id)
    line = stderr_line(run_dlrun(*common, "data.encoding=latin-1", "tracking.experiment=gone", expect=2))
    assert "Cannot set a deleted experiment 'gone'" in line and "tracking.experiment=<name>" in line
    # a file without a header row, read as if it had one
    (workdir / "nohead.csv").write_text("".join(f"{a:.3f},{b:.3f},{int(a > b)}\n" for a, b in rng.normal(size=(99, 2))))
    line = stderr_line(run_dlrun("train", "trainer=smoke", "data=csv", "data.path=nohead.csv", "data.target=label",
                                 expect=2))
    assert "no column 'label'" in line and "looks like data, not column names: add data.header=false" in line
    # a detection CSV with a row of nine fields, and one with a word for a number: one line each
    head = "filename,width,height,class,xmin,ymin,xmax,ymax\na.png,10,10,cat,1,1,5,5\n"
    (workdir / "boxes.csv").write_text(head + "b.png,10,10,dog,1,1,5,5,9\n")
    (workdir / "boxes2.csv").write_text(head + "b.png,10,ten,dog,1,1,5,5\n")
    line = stderr_line(run_dlrun("train", "task=detection", "data=voc", "data.path=boxes.csv", "trainer=smoke",
                                 expect=2))
    assert "'boxes.csv' cannot be parsed" in line and "Expected 8 fields in line 3, saw 9" in line
    line = stderr_line(run_dlrun("train", "task=detection", "data=voc", "data.path=boxes2.csv", "trainer=smoke",
                                 expect=2))
    assert "column 'height' has a non-numeric value 'ten' at line 3" in line


def _monthly(workdir, name: str, repeat=(), drop=()) -> str:
    """A monthly series CSV (10 years) whose rows `repeat` appear twice and `drop` are left out."""
    dates = [f"{2015 + m // 12}-{m % 12 + 1:02d}-01" for m in range(120)]
    lines = [f"{d},{100 + m + 10 * np.sin(2 * np.pi * m / 12):.2f}\n" for m, d in enumerate(dates) if m not in drop]
    for m in sorted(repeat, reverse=True):
        lines.insert(m, lines[m])
    (workdir / name).write_text("date,sales\n" + "".join(lines))
    return name


def test_item9_repeated_times_are_refused_with_their_lines_or_merged(run_dlrun, runs, workdir):
    path = _monthly(workdir, "dup.csv", repeat=(30, 31))
    line = stderr_line(run_dlrun("train", "task=sequence", "data=csv_series", f"data.path={path}", "data.target=sales",
                                 "data.time_column=date", "trainer=smoke", expect=2))
    assert "dup.csv: column 'date' holds '2017-07-01' on 2 rows (lines 32, 33), and 1 more time(s) repeat" in line
    assert "data.duplicates=mean, sum or last" in line
    (failed,) = runs()
    assert failed.info.status == "FAILED" and "holds '2017-07-01' on 2 rows" in failed.data.tags["dlrun.error"]
    line = stderr_line(run_dlrun("train", "task=sequence", "data=csv_series", f"data.path={path}", "data.target=sales",
                                 "data.duplicates=median", "trainer=smoke", expect=2))
    assert "data.duplicates: unknown value 'median' (valid: error, mean, sum, last)" in line


def test_item9_merged_duplicates_and_the_reason_a_season_is_missing(workdir, compose):
    from dlrun.data.series import csv_series, infer_season

    path = _monthly(workdir, "dup.csv", repeat=(30,))
    (workdir / "dup.csv").write_text((workdir / "dup.csv").read_text().replace("2017-07-01,130.00\n", "2017-07-01,1.00\n", 1))
    data = compose("task=sequence", "data=csv_series", f"data.path={workdir / path}", "data.target=sales").data
    values = {}
    for how in ("mean", "sum", "last"):
        data.duplicates = how
        frame = csv_series(data).frame
        assert len(frame) == 120 and frame.index.is_unique and frame.index.is_monotonic_increasing
        values[how] = float(frame.loc["2017-07-01", "sales"])
    assert values == {"mean": 65.5, "sum": 131.0, "last": 130.0}  # last: in file order
    # a month left out: no calendar season, and the reason names the gap
    data.path = str(workdir / _monthly(workdir, "gap.csv", drop=(50,)))
    frame = csv_series(data).frame
    season, why = infer_season(frame, "auto", None, frame["sales"].to_numpy())
    assert season is None and why == "the dates step by MS until 2019-02-01, then 2019-04-01 (a gap?): set data.season"
    data.path, data.duplicates = str(workdir / path), "last"
    full = csv_series(data).frame
    assert infer_season(full, "auto", None, full["sales"].to_numpy())[0] == 12  # merged: monthly again


def test_item10_a_short_series_warns_that_it_has_few_training_windows(workdir, compose):
    from dlrun.console import err_console
    from dlrun.data.series import csv_series
    from dlrun.tasks.sequence import series_data

    path = workdir / _monthly(workdir, "short.csv", drop=range(40, 120))
    cfg = compose("task=sequence", "data=csv_series", f"data.path={path}", "data.target=sales")
    with err_console.capture() as err:
        data = series_data(cfg, csv_series(cfg.data), 32)
    assert data.info.sizes["train"] == 4
    assert ("the training part (28 steps) holds 4 window(s) of 24 + 1 steps, fewer than task.min_train_windows=50"
            in " ".join(err.get().split()))
    cfg.task.min_train_windows = 4  # as many as it has: quiet
    with err_console.capture() as err:
        series_data(cfg, csv_series(cfg.data), 32)
    assert err.get() == ""

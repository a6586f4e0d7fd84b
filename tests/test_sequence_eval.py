"""The sequence task never misleads: the network is compared with every baseline on the validation
windows (a warning and the `dlrun.warnings` tag when it loses there), and task.evaluation=rolling
refits everything at earlier origins without looking past each one (issue 19)."""

from __future__ import annotations

import pytest

from dlrun.errors import DlrunError
from dlrun.tasks.sequence_rolling import fold_ends

LENGTH = 200  # 140 training, 30 validation, 30 test steps


def test_fold_ends_tile_the_end_of_the_series_and_refuse_too_many():
    assert fold_ends(200, 140, 30, 30, 3, 30, 1) == [200, 170, 140]
    assert fold_ends(200, 140, 30, 30, 1, 30, 1) == [200]
    with pytest.raises(DlrunError, match=r"origins=5 leaves the earliest origin 20 training steps") as e:
        fold_ends(200, 140, 30, 30, 5, 30, 1)
    assert "task.rolling.origins=4" in e.value.hint
    with pytest.raises(DlrunError, match="must be >= 1"):
        fold_ends(200, 140, 30, 30, 0, 30, 1)


@pytest.fixture(scope="module")
def line_run(tmp_path_factory):
    """One smoke run on a nearly straight line, where the simple forecasts are almost exact and a
    network after three batches cannot be: with two rolling origins. Records what each fold saw."""
    from mlflow.tracking import MlflowClient

    import dlrun.tasks.sequence as sequence
    from dlrun.cli import main
    from dlrun.console import err_console

    tmp = tmp_path_factory.mktemp("line")
    seen = []
    original = sequence.series_data

    def recording(cfg, series, batch_size):
        data = original(cfg, series, batch_size)
        seen.append((len(series.frame), data.info.bounds, int(data.arrays["index_test"].max())))
        return data

    with pytest.MonkeyPatch.context() as mp, err_console.capture() as err, pytest.raises(SystemExit) as done:
        mp.chdir(tmp)
        mp.setattr(sequence, "series_data", recording)
        main(["train", "task=sequence", "trainer=smoke", f"data.length={LENGTH}", "data.noise=0.001",
              "data.season_periods=[]", "data.season_amplitudes=[]", "task.evaluation=rolling",
              "task.rolling.origins=2", f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.run.dir={tmp}/run"])
    assert done.value.code == 0, err.get()[-3000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return run, err.get(), seen


def test_a_network_that_loses_on_validation_is_named_with_both_numbers(line_run):
    run, stderr, _ = line_run
    line = next(ln for ln in stderr.splitlines() if ln.startswith("warning: the network loses"))
    assert "baseline on the validation split: mae" in line and "; try " in line
    assert line.removeprefix("warning: ") in run.data.tags["dlrun.warnings"]
    assert run.info.status == "FINISHED" and "test/mae" in run.data.metrics  # the test report is unchanged
    assert {"baseline/ets/mae", "baseline/arima/mae", "baseline/naive/mae"} <= set(run.data.metrics)


def test_rolling_origins_refit_on_the_past_only(line_run):
    run, _, seen = line_run
    assert run.data.metrics["rolling/origins"] == 2
    assert {"rolling/mae", "rolling/baseline/naive/mae", "rolling/baseline/ets/mae"} <= set(run.data.metrics)
    (n0, b0, last0), (n1, b1, last1) = seen  # the runner's fold (last origin), then the earlier one
    assert (n0, n1) == (LENGTH, LENGTH - 30)  # the earlier fold's series ends with its test block
    assert b1["test"] == (140, 170) and b0["test"] == (170, 200)  # consecutive test blocks
    assert b1["val"][1] == b1["test"][0] and last1 == 169 and last0 == 199  # fitting stops where testing starts

"""Resume edge cases (issue 23, items 1-4): a run killed before its first backup, a run left
RUNNING by a dead process, resuming a finished run, the stop reason of a resumed run, and no
MLflow schema warning on resume. Kills are real processes (e2e); the messages in process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import stderr_line, stop_dlrun_at

TINY = ("train", "experiment=insurance", "trainer.epochs=2", "trainer.limit_batches=2")


def _steps(client, run_id, key="train/loss"):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.e2e
def test_item1_killed_before_the_first_backup_trains_again_in_the_same_run(run_dlrun, runs, mlflow_client,
                                                                            workdir):
    """kill -9 before any epoch ended: the run is left RUNNING with no metrics; dlrun says its
    process is gone, and a resume by run id trains it from epoch 0 inside the same MLflow run."""
    command = ("train", "experiment=insurance", "trainer.epochs=12")  # default backup interval (30 s)
    stop_dlrun_at(workdir, command, signal.SIGKILL)
    (killed,) = runs()
    run_id = killed.info.run_id
    assert killed.info.status == "RUNNING" and _steps(mlflow_client, run_id) == []
    line = stderr_line(run_dlrun("eval", f"run_id={run_id}", expect=2))
    assert "left RUNNING by a process that is gone" in line and f"trainer.resume={run_id}" in line
    proc = run_dlrun(*command, f"trainer.resume={run_id}")
    assert "training it again from epoch 0 in the same MLflow run" in " ".join(proc.stdout.split())
    assert "Inferred schema" not in proc.stderr  # item 4
    (run,) = runs()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert _steps(mlflow_client, run_id) == list(range(1, 13))
    assert run.data.tags["dlrun.stops"].startswith("RUNNING, resumed after epoch 0")


@pytest.mark.e2e
def test_item1_killed_mid_training_with_the_default_interval_resumes_without_duplicates(run_dlrun, runs,
                                                                                         mlflow_client, workdir):
    """The first backup follows the first epoch (then one per 30 s): a kill -9 at epoch 8 of a
    fast run resumes from a backup, one metric point per epoch, no duplicates."""
    command = ("train", "experiment=insurance", "trainer.epochs=24")
    stop_dlrun_at(workdir, command, signal.SIGKILL, epoch=8)
    (killed,) = runs()
    assert killed.info.status == "RUNNING"
    proc = run_dlrun(*command, "trainer.resume=auto")
    assert "(left RUNNING by a process that is gone)" in " ".join(proc.stdout.split())
    (run,) = runs()
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert 1 <= int(run.data.tags["dlrun.resumed_at_epoch"]) < 24
    for key in ("train/loss", "val/accuracy"):
        assert _steps(mlflow_client, run.info.run_id, key) == list(range(1, 25)), key


@pytest.mark.e2e
def test_item3_and_4_a_resumed_sigterm_run_finishes_without_its_stop_reason(run_dlrun, runs, mlflow_client,
                                                                           workdir):
    command = ("train", "experiment=insurance", "trainer.epochs=12", "trainer.backup_interval_s=0")
    stop_dlrun_at(workdir, command, signal.SIGTERM, epoch=4)
    (stopped,) = runs()
    assert stopped.info.status == "KILLED" and stopped.data.tags["dlrun.error"] == "terminated (SIGTERM)"
    proc = run_dlrun(*command, "trainer.resume=auto")
    assert "Inferred schema" not in proc.stderr
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert "dlrun.error" not in run.data.tags  # moved to the history tag
    assert run.data.tags["dlrun.stops"].startswith("KILLED, resumed after epoch ")
    assert run.data.tags["dlrun.stops"].endswith(": terminated (SIGTERM)")
    assert _steps(mlflow_client, run.info.run_id) == list(range(1, 13))


def test_item2_resuming_a_finished_run_says_it_finished(run_dlrun, runs, workdir):
    run_dlrun(*TINY)
    (run,) = runs()
    folder = next(Path(workdir, "outputs").glob("*/*/backup")).parent
    for given in (str(folder), run.info.run_id):
        line = stderr_line(run_dlrun(*TINY, f"trainer.resume={given}", expect=2))
        assert f"run {run.info.run_id} finished (all its epochs ran): nothing to resume" in line, line
    line = stderr_line(run_dlrun(*TINY, "trainer.resume=auto", expect=2))
    assert "every run of this command under ./outputs finished" in line
    (again,) = runs()
    assert again.info.status == "FINISHED" and "dlrun.error" not in again.data.tags  # untouched


def test_item1_a_run_whose_process_lives_is_not_resumed(run_dlrun, runs, workdir):
    """The lock of a live process (here: this test's) keeps a second process off its folder."""
    from dlrun.training import backup

    run_dlrun(*TINY)
    folder = next(Path(workdir, "outputs").glob("*/*/backup")).parent
    state = backup.read(folder / backup.FOLDER)
    backup._rewrite(state, finished=False, epochs_done=0)  # as if it were still in its first epoch
    with backup.hold(folder):
        line = stderr_line(run_dlrun(*TINY, f"trainer.resume={folder}", expect=2))
        assert "is not stopped: a dlrun process is still training it (pid " in line
        line = stderr_line(run_dlrun(*TINY, "trainer.resume=auto", expect=2))
        assert "is not stopped" in line
    (run,) = runs()
    assert run.info.status == "FINISHED" and "dlrun.error" not in run.data.tags

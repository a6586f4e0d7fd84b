"""Resume after a crash (issue 12): a training killed with SIGKILL continues from its backup
into the same MLflow run, with one metric point per epoch and no gaps."""

from __future__ import annotations

import signal

import pytest
from conftest import stderr_line, stop_dlrun_at

pytestmark = pytest.mark.e2e

COMMAND = ("train", "experiment=insurance", "trainer.epochs=24", "trainer.backup_interval_s=0")


def test_sigkill_then_resume_auto_continues_the_same_run(run_dlrun, runs, mlflow_client, workdir):
    stop_dlrun_at(workdir, COMMAND, signal.SIGKILL, epoch=6)
    (killed,) = runs()
    assert killed.info.status == "RUNNING"  # SIGKILL: nothing could end it
    out = run_dlrun(*COMMAND, "trainer.resume=auto").stdout
    assert "resuming after epoch" in out
    (run,) = runs()
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    resumed_at = int(run.data.tags["dlrun.resumed_at_epoch"])
    assert 1 <= resumed_at < 24
    for key in ("train/loss", "val/accuracy"):
        steps = sorted(m.step for m in mlflow_client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, 25)), (key, steps)
    assert run.data.metrics["test/accuracy"] > 0.7
    # the finished run is never picked again
    line = stderr_line(run_dlrun(*COMMAND, "trainer.resume=auto", expect=2))
    assert "every run of this command under ./outputs finished" in line

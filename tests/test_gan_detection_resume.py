"""A GAN and a detection run killed with SIGKILL after a backup resume into the same MLflow run at
the saved epoch, with one metric point per epoch (issue 20: they train through the runner's fit)."""

from __future__ import annotations

import signal

import pytest
from conftest import stop_dlrun_at

pytestmark = pytest.mark.e2e

COMMON = ("trainer=smoke", "trainer.smoke=false", "trainer.fast=true", "trainer.limit_batches=2",
          "trainer.epochs=5", "trainer.backup_interval_s=0")
RUNS = {"gan": (("train", "experiment=cgan", *COMMON, "task.sample_every=5"), "train/d_loss", "val/frechet_distance"),
        "detection": (("train", "task=detection", *COMMON, "data.n_train=32", "data.n_val=16", "data.n_test=16"),
                      "train/loss", "val/map50")}


@pytest.mark.parametrize("family", list(RUNS))
def test_sigkill_after_a_backup_then_resume_continues_at_the_saved_epoch(family, run_dlrun, runs, mlflow_client,
                                                                        workdir):
    command, train_key, val_key = RUNS[family]
    stop_dlrun_at(workdir, command, signal.SIGKILL, epoch=2)
    (killed,) = runs()
    assert killed.info.status == "RUNNING"
    out = run_dlrun(*command, "trainer.resume=auto").stdout
    assert "resuming after epoch" in out
    (run,) = runs()
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert 1 <= int(run.data.tags["dlrun.resumed_at_epoch"]) < 5  # the last backup before the kill
    for key in (train_key, val_key):
        steps = sorted(m.step for m in mlflow_client.get_metric_history(run.info.run_id, key))
        assert steps == [1, 2, 3, 4, 5], (key, steps)

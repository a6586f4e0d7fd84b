"""Resume after a crash (issue 12): a training killed with SIGKILL continues from its backup
into the same MLflow run, with one metric point per epoch and no gaps."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import DLRUN, dlrun_env, stderr_line

pytestmark = pytest.mark.e2e

COMMAND = ("train", "experiment=insurance", "trainer.epochs=24", "trainer.backup_interval_s=0")


def _kill_after(workdir, epoch: int, sig=signal.SIGKILL):
    proc = subprocess.Popen([DLRUN, *COMMAND], cwd=workdir, env=dlrun_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= epoch:
                break
        else:
            pytest.fail("training never got there")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc


def test_sigkill_then_resume_auto_continues_the_same_run(run_dlrun, runs, mlflow_client, workdir):
    _kill_after(workdir, 6)
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

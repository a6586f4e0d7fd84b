"""Faults a demanding user meets (issue 7) through the CLI: NaN losses, one-class and constant
targets, corrupt files, deleted experiments (in process); concurrent first runs, unreadable
folders and stores (real console-script processes, e2e). Each asserts the exit code, one line
on stderr and what the MLflow store holds afterwards."""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import DLRUN, dlrun_env, stderr_line


def start(cwd: Path, *args, preexec_fn=None, env=None):
    return subprocess.Popen([DLRUN, *map(str, args)], cwd=cwd, env=dlrun_env(**(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)


def finish(proc, timeout: int = 300):
    out, err = proc.communicate(timeout=timeout)
    return types.SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err)


def all_runs(client):
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], order_by=["attributes.start_time ASC"])


@pytest.mark.e2e
def test_two_first_runs_in_a_fresh_folder_each_log_their_own_model(workdir, mlflow_client, tmp_path):
    """Both start before the store exists (its creation is locked) and in the same second (each
    gets its own run folder): each run's checkpoint and model are its own network."""
    common = ("train", "experiment=insurance", "trainer.epochs=2", "trainer.progress=false")
    small = start(workdir, *common, "model.hidden_units=[4]")
    big = start(workdir, *common, "model.hidden_units=[300]")
    results = [finish(small), finish(big)]
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    runs = all_runs(mlflow_client)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["dlrun.workdir"] for r in runs}) == 2
    import keras

    for run in runs:
        units = run.data.params["model.hidden_units"]
        path = mlflow_client.download_artifacts(run.info.run_id, "checkpoints/best.keras", str(tmp_path / run.info.run_id))
        dense = keras.saving.load_model(path).layers[1]
        assert f"[{dense.units}]" == units, (units, dense.units)


def test_nan_loss_fails_the_run_at_the_first_bad_batch(run_dlrun, runs, mlflow_client):
    proc = run_dlrun("train", "experiment=insurance", "trainer.optimizer=sgd", "trainer.learning_rate=1e6",
                     "trainer.epochs=10", expect=2)
    line = stderr_line(proc)
    assert "loss became NaN at epoch 1, batch" in line and "trainer.clipnorm" in line
    (run,) = runs()
    assert run.info.status == "FAILED" and "loss became NaN" in run.data.tags["dlrun.error"]
    assert "served" not in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}  # no useless model


def test_targets_that_teach_nothing_are_rejected_and_dropped_rows_are_a_logged_warning(run_dlrun, runs, workdir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    constant = workdir / "constant.csv"
    constant.write_text("a,b,y\n" + "".join(f"{a},{b},5.25\n" for a, b in x))
    line = stderr_line(run_dlrun("train", "trainer=smoke", "data=csv", f"data.path={constant}", "data.target=y",
                                 expect=2))
    assert "target 'y' is constant" in line
    gaps = workdir / "gaps.csv"
    gaps.write_text("a,b,y\n" + "".join(f"{a},{b},{'' if i % 20 == 0 else int(a > 0)}\n" for i, (a, b) in enumerate(x)))
    proc = run_dlrun("train", "trainer=smoke", "data=csv", f"data.path={gaps}", "data.target=y")
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    # the data's warning first; a smoke network may also lose to the baselines on validation
    assert warning[0] == f"warning: {gaps}: 10 row(s) with an empty target 'y' left out"
    assert all("the network loses to the" in w for w in warning[1:])
    finished = runs()[0]
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["dlrun.warnings"].split(" | ")[0] == warning[0].removeprefix("warning: ")


def _png_tree(root: Path, classes=("a", "b"), n=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(root / c / f"{i}.png")
    return root


def test_image_folders_one_class_and_a_corrupt_file(run_dlrun, runs, workdir):
    one = _png_tree(workdir / "one", classes=("cats",))
    line = stderr_line(run_dlrun("train", "task=cnn", "trainer=smoke", "data=folder", f"data.path={one}",
                                 "data.image_size=[8,8]", expect=2))
    assert "1 class(es): nothing to learn" in line
    two = _png_tree(workdir / "two")
    bad = two / "a" / "broken.png"
    bad.write_bytes((two / "a" / "0.png").read_bytes()[:50])
    args = ("train", "task=cnn", "trainer=smoke", "data=folder", f"data.path={two}", "data.image_size=[8,8]")
    line = stderr_line(run_dlrun(*args, expect=2))
    assert f"{bad}: not a readable image" in line and "data.skip_bad_files=true" in line
    proc = run_dlrun(*args, "data.skip_bad_files=true")
    assert f"warning: 1 unreadable image(s) skipped: {bad}" in proc.stderr
    assert runs()[0].info.status == "FINISHED"


NOBODY = 65534


def _as_nobody():
    """preexec_fn: the child drops root (root ignores file modes), as a normal user would run."""
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _read_only_folder(base: Path):
    """A folder its dlrun processes may not write to, and how they must be started (None, or
    a preexec_fn). A normal user: chmod. Root ignores modes, so for root: a read-only tmpfs
    mount, else the immutable flag (both need capabilities a container may lack), else the
    processes run as 'nobody' over a chmod-ed folder (needs a Python that others may read)."""
    ro = base / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro, None, lambda: None
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0:
        return ro, None, lambda: subprocess.run(["umount", str(ro)], capture_output=True)
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0:
        return ro, None, lambda: subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
    probe = subprocess.run([DLRUN, "--version"], preexec_fn=_as_nobody, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("root without mount/chattr capabilities, and the environment is not readable by others")
    for folder in (base, *base.parents):  # let 'nobody' reach the base folder
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o005)
    base.chmod(0o777)
    ro.chmod(0o555)
    return ro, _as_nobody, lambda: None


@pytest.mark.e2e
def test_read_only_folder_is_one_line(tmp_path):
    ro, user, undo = _read_only_folder(tmp_path)
    env = {"HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    try:
        procs = {"cwd": start(ro, "train", "trainer=smoke", preexec_fn=user, env=env),
                 "store": start(ro, "train", "trainer=smoke", f"hydra.run.dir={tmp_path / 'out'}", preexec_fn=user,
                                env=env)}
        results = {k: finish(p) for k, p in procs.items()}
    finally:
        undo()
    for r in results.values():
        assert r.returncode == 2, r.stderr[-2000:]
    assert f"folder '{ro}' is not writable" in stderr_line(results["cwd"])
    assert f"cannot create the tracking store '{ro}/mlflow.db'" in stderr_line(results["store"])


def test_a_store_that_is_not_a_database_is_one_line_and_never_overwritten(run_dlrun, workdir):
    (workdir / "mlflow.db").write_bytes(b"this is not a database" * 10)
    assert "mlflow.db' is not an SQLite database" in stderr_line(run_dlrun("train", "trainer=smoke", expect=2))
    assert (workdir / "mlflow.db").read_bytes() == b"this is not a database" * 10


def test_deleted_experiment_and_sweep_jobs_that_fail(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "trainer=smoke", "tracking.experiment=gone")
    mlflow_client.delete_experiment(mlflow_client.get_experiment_by_name("gone").experiment_id)
    line = stderr_line(run_dlrun("train", "trainer=smoke", "tracking.experiment=gone", expect=2))
    assert "Cannot set a deleted experiment 'gone'" in line
    # a sweep goes on past a job with a bad value; that job is one line, the sweep exits 2
    proc = run_dlrun("train", "-m", "trainer=smoke", "model.hidden_units=abc,[8]", expect=2)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: model.hidden_units must be a positive integer or a list of them, got 'abc' "
                      "(e.g. model.hidden_units=[64,32])"]
    assert "Traceback" not in proc.stderr
    # the gone run is deleted; the sweep is one parent run over its two jobs
    children = [r for r in runs() if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs() if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED"]  # abc failed, [8] finished
    assert len(parents) == 1 and parents[0].data.metrics["sweep/failed"] == 1
    assert parents[0].data.metrics["sweep/finished"] == 1


def test_misleading_inputs_get_the_right_message(run_dlrun, workdir):
    (workdir / "folder.csv").mkdir()
    (workdir / "junk.keras").write_text("junk")
    rng = np.random.default_rng(1)
    (workdir / "u.csv").write_text("größe,b,y\n" + "".join(f"{a},{b},{int(a > b)}\n" for a, b in rng.normal(size=(60, 2))))
    r = {
        "folder": run_dlrun("train", "trainer=smoke", "data=csv", "data.path=folder.csv", "data.target=y", expect=None),
        "junk": run_dlrun("eval", "checkpoint=junk.keras", expect=None),
        "quote": run_dlrun("train", "trainer=smoke", "data=csv", "data.path=u.csv", "data.target=y",
                           "data.features=[größe,b]", expect=None),
        "ok": run_dlrun("train", "trainer=smoke", "data=csv", "data.path=u.csv", "data.target=y", expect=None),
    }
    assert "'folder.csv' is a folder, not a file" in stderr_line(r["folder"])
    assert "'junk.keras' is not a Keras model file" in stderr_line(r["junk"])
    assert """quote names with non-ASCII letters: 'data.features=["größe",b]'""" in stderr_line(r["quote"])
    assert r["ok"].returncode == 0 and "UserWarning" not in r["ok"].stderr, r["ok"].stderr[-2000:]


def test_tiny_csv_and_a_checkpoint_for_other_data_are_one_line(run_dlrun, runs, workdir):
    (workdir / "t.csv").write_text("a,b,y\n1,2,x\n3,4,y\n5,6,x\n")
    line = stderr_line(run_dlrun("train", "trainer=smoke", "data=csv", "data.path=t.csv", "data.target=y", expect=2))
    assert "the train split has 1 row(s) of 3: too few" in line
    (failed,) = runs()
    assert failed.info.status == "FAILED" and "too few" in failed.data.tags["dlrun.error"]
    run_dlrun("train", "trainer.epochs=1", "trainer.limit_batches=2", "tracking=off", "hydra.run.dir=o")
    line = stderr_line(run_dlrun("eval", "checkpoint=o/best.keras", "data=iris", "tracking=off", expect=2))
    assert "checkpoint 'best.keras' expects 3 features; data 'iris' gives 4" in line

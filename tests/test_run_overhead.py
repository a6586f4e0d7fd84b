"""The run's overhead (issue 18): a smoke sweep opens its store once, composes its config once,
logs its models without loading them again, fits its baselines once, and pays the garbage
collector's walk over TensorFlow's objects nowhere, while everything a run logs stays as it
was. A new store is a copy of MLflow's own empty store. Timings: scripts/run_overhead.py."""

from __future__ import annotations

import copy
import gc
import sys

import numpy as np
import pytest
import yaml
from conftest import dlrun_env, dlrun_inprocess, store_runs

# what a smoke run of the default task logs besides the resolved config's own keys (flattened,
# one param each) and MLflow's system/* metrics (sampled every tracking.system_metrics_interval
# seconds: a short run may end before the first sample)
EXTRA_PARAMS = {"model.params", "strategy.replicas", "strategy.workers", "trainer.global_batch_size"}
CLASSES = ("few or none", "in between", "many accidents")
TEST_METRICS = {"accuracy", "f1_macro", "precision_macro", "recall_macro", *(f"f1/{c}" for c in CLASSES)}
METRICS = {
    *(f"test/{m}" for m in TEST_METRICS),
    *(f"baseline/{b}/{m}" for b in ("linear", "random_forest") for m in TEST_METRICS),
    "train/accuracy", "train/loss", "val/accuracy", "val/loss",
    "timing/epochs", "timing/fit_seconds", "timing/samples_per_second", "objective/val",
}
DLRUN_TAGS = {"dlrun.command", "dlrun.data_source", "dlrun.devices", "dlrun.evaluated_weights", "dlrun.gpus",
              "dlrun.model", "dlrun.objective", "dlrun.objective_maximize", "dlrun.overrides", "dlrun.strategy",
              "dlrun.task", "dlrun.version", "dlrun.workdir"}
OTHER_TAGS = {"keras.version", "tensorflow.version", "python.version", "mlflow.runName", "mlflow.source.name",
              "mlflow.source.type", "mlflow.user"}
ARTIFACTS = ["config.yaml", "plots/confusion_matrix.png", "plots/learning_curves.png", "served/example.npz",
             "served/model.keras", "served/serving.json", "tables/classes.json", "tables/comparison.json"]
MODEL_FILES = ["MLmodel", "conda.yaml", "input_example.json", "pyfunc.py", "python_env.yaml", "requirements.txt",
               "serving_input_example.json"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A 2-job smoke sweep in one process (`dlrun train -m trainer=smoke
    trainer.learning_rate=...`, Hydra's basic launcher) in a fresh folder, counting the tracking
    stores MLflow builds, dlrun's config composes, the loads of a served model and the baseline
    fits during it. The first job's run stands for any smoke run in what it logs."""
    import hydra
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    from dlrun import serving
    from dlrun.tasks import tabular

    tmp = tmp_path_factory.mktemp("overhead")
    counts = {"stores": 0, "composes": 0, "loads": 0, "baseline fits": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    uri = f"sqlite:///{tmp}/mlflow.db"
    args = ("train", "-m", "trainer=smoke", "trainer.progress=false", "trainer.learning_rate=0.001,0.002",
            f"hydra.sweep.dir={tmp}/sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SqlAlchemyStore, "__init__", counted("stores", SqlAlchemyStore.__init__))
        mp.setattr(hydra, "compose", counted("composes", hydra.compose))  # check_composes' compose
        mp.setattr(serving, "load", counted("loads", serving.load))
        mp.setattr(tabular, "_fit_baselines", counted("baseline fits", tabular._fit_baselines))
        # the empty store is built in the test's folder, not in ~/.cache
        proc = dlrun_inprocess(args, tmp, env={"XDG_CACHE_HOME": str(tmp / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = store_runs(client)[::-1]  # oldest first
    parent = [r for r in runs if r.data.tags.get("dlrun.sweep") == "true"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parent) == 1 and len(jobs) == 2
    return {"client": client, "run": jobs[0], "jobs": jobs, "counts": counts, "uri": uri}


def test_a_sweep_opens_its_store_once_and_fits_its_baselines_once(smoke):
    # one SqlAlchemyStore for the sweep (MLflow caches it per URI: a second, differently spelled
    # URI would create and check the store again); dlrun's own compose check composes once
    # (Hydra composes each job's config itself); no logged model is loaded back; the second job
    # (same data and split, another learning rate) reuses the first job's baselines
    assert smoke["counts"] == {"stores": 1, "composes": 1, "loads": 0, "baseline fits": 1}
    first, second = (job.data.metrics for job in smoke["jobs"])
    baseline = {k: v for k, v in first.items() if k.startswith("baseline/")}
    assert baseline and baseline == {k: v for k, v in second.items() if k.startswith("baseline/")}
    assert first["test/accuracy"] != second["test/accuracy"] or first["train/loss"] != second["train/loss"]


def test_params_tags_metrics_and_datasets_are_logged(smoke):
    client, run = smoke["client"], smoke["run"]
    assert run.info.status == "FINISHED"
    from pathlib import Path

    from dlrun.tracking import flatten

    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text())

    assert set(run.data.params) == set(flatten(config)) | EXTRA_PARAMS
    assert {k for k in run.data.tags if k.startswith("dlrun.")} - {"dlrun.warnings"} == DLRUN_TAGS
    assert set(run.data.tags) >= OTHER_TAGS | {"mlflow.parentRunId"}
    assert {k for k in run.data.metrics if not k.startswith("system/")} == METRICS
    contexts = sorted(t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context")
    assert contexts == ["testing", "training", "validation"]


def _files(client, run_id, path=None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _files(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def test_artifacts_and_logged_model(smoke):
    from mlflow.artifacts import list_artifacts

    client, run = smoke["client"], smoke["run"]
    for job in smoke["jobs"]:
        assert _files(client, job.info.run_id) == ARTIFACTS
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    files = {a.path.split("/", 1)[1] for a in list_artifacts(artifact_uri=model.artifact_location)}
    assert set(MODEL_FILES) <= files
    # the test metrics are linked to the logged model and the test dataset
    linked = {m.key for m in model.metrics if m.dataset_name == "insurance"}
    assert linked == {f"test/{m}" for m in TEST_METRICS}


def test_logged_model_answers_its_serving_example(smoke):
    """What MLflow's serving-input check did at every run (and dlrun skips there): the logged
    pyfunc model loads and answers its own serving input example, with the signature's columns."""
    import mlflow
    from mlflow.models import Model
    from mlflow.pyfunc.scoring_server import _parse_json_data

    run = smoke["run"]
    mlflow.set_tracking_uri(smoke["uri"])
    uri = f"runs:/{run.info.run_id}/model"
    info = Model.load(uri)
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs] == ["speed", "age", "miles"]
    local = mlflow.artifacts.download_artifacts(uri)
    example = info.get_serving_input(local)
    model = mlflow.pyfunc.load_model(uri)
    answers = model.predict(_parse_json_data(example, info, info.get_input_schema()).data)
    assert list(answers.columns) == ["label", *(f"probability_{i}" for i in range(3))]
    assert set(answers["label"]) <= {"0", "1", "2"}  # the target's own values (CLASSES are their names)
    assert np.allclose(answers[[f"probability_{i}" for i in range(3)]].sum(axis=1), 1.0, atol=1e-5)


# -- the garbage collector around heavy imports --------------------------------------------------

@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """The name of a module not imported yet (a file in a folder put on sys.path)."""
    (tmp_path / "dlrun_overhead_probe.py").write_text("CYCLE = []\nCYCLE.append(CYCLE)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "dlrun_overhead_probe"
    sys.modules.pop("dlrun_overhead_probe", None)


@pytest.fixture
def collector_back_on():
    yield
    gc.enable()


def test_paused_gc_freezes_what_a_new_import_left(probe_module, collector_back_on):
    import importlib

    from dlrun.startup import paused_gc

    frozen = gc.get_freeze_count()
    with paused_gc():
        assert not gc.isenabled()
        importlib.import_module(probe_module)
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen
    frozen = gc.get_freeze_count()
    with paused_gc():  # nothing new imported (a sweep's later job): nothing frozen
        importlib.import_module(probe_module)
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_paused_gc_restores_the_collector_after_an_error(collector_back_on):
    from dlrun.startup import paused_gc

    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()  # already paused by the caller: left paused
    with paused_gc():
        pass
    assert not gc.isenabled()


# -- baselines shared by the jobs of a sweep -----------------------------------------------------

def test_baselines_are_fitted_once_for_the_same_data(monkeypatch):
    from omegaconf import OmegaConf

    from dlrun.tasks import tabular

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)).astype("float32"), rng.integers(0, 2, 60)
    info = tabular.TableInfo(name="t", target="classification", class_names=["a", "b"])
    cfg = OmegaConf.create({"task": {"baselines": ["linear"], "forest_trees": 200, "split": {"seed": 1}}})
    fits = []
    real = tabular._fit_baselines
    monkeypatch.setattr(tabular, "_fit_baselines", lambda *a: fits.append(1) or real(*a))
    first = tabular.baselines(cfg, info, x[:40], y[:40], x[40:], y[40:])
    expected = copy.deepcopy(first)
    first["linear"]["accuracy"] = -1.0  # a caller changing its copy changes nothing shared
    again = tabular.baselines(cfg, info, x[:40], y[:40], x[40:], y[40:])
    assert len(fits) == 1 and again == expected
    other = x.copy()
    other[0, 0] += 1.0  # other data (another fast subset, another file): fitted again
    tabular.baselines(cfg, info, other[:40], y[:40], other[40:], y[40:])
    cfg.task.split.seed = 2  # another split seed: fitted again
    tabular.baselines(cfg, info, other[:40], y[:40], other[40:], y[40:])
    assert len(fits) == 3


# -- a new store: a copy of an empty one MLflow built once --------------------------------------

def _schema(db) -> tuple:
    """Tables, indexes and their columns and constraints (in any order), and the schema version."""
    import sqlite3

    with sqlite3.connect(db) as c:
        objects = {(kind, name): sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())
                   for kind, name, sql in c.execute("SELECT type, name, sql FROM sqlite_master")}
        version = c.execute("SELECT version_num FROM alembic_version").fetchall()
    return objects, version


def test_a_new_store_is_mlflows_own_empty_store_copied(tmp_path, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from dlrun.tracking import copy_empty_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    copy_empty_store(tmp_path / "a" / "mlflow.db")  # builds the empty store in the cache, then copies it
    template = tmp_path / "cache" / "dlrun"
    assert len(list(template.glob("mlflow-*-empty.db"))) == 1
    copied = SqlAlchemyStore(f"sqlite:///{tmp_path}/a/mlflow.db", str(tmp_path / "a" / "mlruns"))
    SqlAlchemyStore(f"sqlite:///{tmp_path}/b/mlflow.db", str(tmp_path / "b" / "mlruns"))  # MLflow's own
    assert _schema(tmp_path / "a" / "mlflow.db") == _schema(tmp_path / "b" / "mlflow.db")
    # the Default experiment is the new folder's, made by MLflow on the copy (not the cache's)
    assert copied.get_experiment("0").artifact_location == f"{tmp_path}/a/mlruns/0"


def test_a_new_store_without_a_writable_cache_is_left_to_mlflow(tmp_path, monkeypatch):
    import mlflow.store.db.utils

    from dlrun.tracking import copy_empty_store

    (tmp_path / "cache").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy_empty_store(tmp_path / "mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()  # MLflow creates it on first use, as before

    def broken(engine):
        with engine.connect():  # the file exists now
            pass
        raise RuntimeError("the build of the empty store fails half-way")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", broken)
    copy_empty_store(tmp_path / "mlflow.db")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["cache"]  # no half-made file anywhere


def test_an_empty_store_of_another_schema_is_not_copied(tmp_path, monkeypatch):
    import sqlite3

    from mlflow.store.db.utils import _get_latest_schema_revision

    from dlrun.tracking import copy_empty_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy_empty_store(tmp_path / "first.db")
    (template,) = (tmp_path / "cache" / "dlrun").glob("mlflow-*-empty.db")
    assert _get_latest_schema_revision() in template.name  # another MLflow schema: another file
    with sqlite3.connect(template) as c:  # as if MLflow's migrations changed under the same name
        c.execute("UPDATE alembic_version SET version_num = 'older'")
    copy_empty_store(tmp_path / "mlflow.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "first.db"]  # left to MLflow, no leftovers


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "file://{tmp}/mlruns"])
def test_stores_that_are_no_sqlite_file_never_use_the_empty_store(tmp_path, monkeypatch, uri):
    from dlrun.tracking import open_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    open_store(uri.format(tmp=tmp_path))
    assert not (tmp_path / "cache").exists() and not (tmp_path / ":memory:").exists()


OPEN_ON_GO = """
import os, sys, time
from pathlib import Path
from dlrun.tracking import open_store
from mlflow.tracking import MlflowClient
go = Path(sys.argv[2])
Path(f"{go}.{os.getpid()}").touch()  # ready: MLflow imported
while not go.exists():  # all processes open their store at once
    time.sleep(0.002)
open_store(sys.argv[1])
print(MlflowClient(tracking_uri=sys.argv[1]).get_experiment("0").artifact_location)
"""


@pytest.mark.e2e
def test_first_runs_at_once_with_an_empty_cache_each_get_a_whole_store(tmp_path):
    """Six processes, three per new folder, open their store in the same instant while no
    empty store is cached yet: all build it at once, and each folder's store is MLflow's own."""
    import subprocess
    import time

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    (tmp_path / "barrier").mkdir()
    go = tmp_path / "barrier" / "go"
    env = dlrun_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_ON_GO, f"sqlite:///{folder}/mlflow.db", str(go)],
                              cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for folder in folders for _ in range(3)]
    deadline = time.time() + 120
    while len(list(go.parent.iterdir())) < len(procs) and time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a process ended before opening its store"
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert sorted(out.strip() for out, _ in results) == sorted(f"{f}/mlruns/0" for f in folders for _ in range(3))
    (tmp_path / "own").mkdir()
    SqlAlchemyStore(f"sqlite:///{tmp_path}/own/mlflow.db", str(tmp_path / "own" / "mlruns"))  # MLflow's own
    for folder in folders:
        assert _schema(folder / "mlflow.db") == _schema(tmp_path / "own" / "mlflow.db")
        assert sorted(p.name for p in folder.iterdir()) == [".mlflow.db.lock", "mlflow.db"]
    assert [p.name for p in (tmp_path / "cache" / "dlrun").iterdir()] == [
        next((tmp_path / "cache" / "dlrun").glob("mlflow-*-empty.db")).name]  # one template, no parts left

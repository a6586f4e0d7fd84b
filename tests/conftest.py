"""Shared fixtures: run `dlrun` in this process (default tier) or as a real console-script
process (e2e tier), share trained runs across tests, and read the real MLflow store.

Tiers (pyproject's addopts deselect the last two):
- default: unit tests and in-process runs (`run_dlrun`, `shared_run`): minutes in all;
- `-m e2e`: tests that need real processes (signals, kill and resume, servers, concurrent
  first runs, read-only folders, parallel sweeps, installed wheels): `run_process`;
- `-m slow`: the preset quality bars of `scripts/*_quality.py`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
import types
from pathlib import Path

import pytest

# rich reads the width when dlrun's consoles are made (import time): tables as wide as in a terminal
os.environ.setdefault("COLUMNS", "160")

DLRUN = shutil.which("dlrun", path=str(Path(sys.executable).parent)) or shutil.which("dlrun")


def pytest_configure(config):
    """TensorFlow (quietly) with two logical CPU devices before anything starts its runtime, so
    that in-process runs with `strategy.cpu_replicas=2` get a real two-replica MirroredStrategy."""
    from dlrun.runner import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    with contextlib.suppress(RuntimeError):  # already initialised (a plugin imported it): one device
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def dlrun_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "160"})
    env.update(extra)
    return env


def _reset_mlflow() -> None:
    """Forget the tracking URI an earlier in-process run set (a run sets it for its process)."""
    if "mlflow" not in sys.modules:
        return
    import mlflow

    leaked = mlflow.active_run()
    while mlflow.active_run():
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(None)
    assert leaked is None, f"an in-process dlrun call left MLflow run {leaked.info.run_id} active"


def _reset_determinism() -> None:
    """trainer.deterministic=true turns TensorFlow's op determinism on for the process (and
    trainer.precision the dtype policy); a later in-process run must start without them, as a
    new process would."""
    from tensorflow.python.framework import config as tf_config  # no public switch back

    if tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    import keras

    # trainer.precision sets Keras' global dtype policy for the process: later tests that build
    # models directly must get float32 again, as a new process would
    keras.mixed_precision.set_global_policy("float32")


def dlrun_inprocess(args, cwd: Path, env: dict | None = None) -> types.SimpleNamespace:
    """`dlrun *args` in this process, in folder `cwd`: (returncode, stdout, stderr) like a
    finished process. MLflow's default store is `cwd`/mlflow.db, as for a process started there."""
    from dlrun import cli

    saved_env, saved_argv, saved_cwd = dict(os.environ), list(sys.argv), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    # the default relative sqlite:///mlflow.db, made absolute: MLflow caches a store per URI
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(cwd).resolve()}/mlflow.db"
    os.environ.update(env or {})
    _reset_mlflow()
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # a bug: its traceback, as a process would print it
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        _reset_mlflow()
        _reset_determinism()
    return types.SimpleNamespace(args=list(args), returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def dlrun_process(args, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real `dlrun` console script as a new process in folder `cwd`."""
    assert DLRUN, "the dlrun console script is not installed"
    return subprocess.run([DLRUN, *map(str, args)], cwd=cwd, env=dlrun_env(**(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def stop_dlrun_at(workdir: Path, args, sig, epoch: int = 0) -> None:
    """Start `dlrun *args` as a real process in `workdir` and send it `sig` once it prints epoch
    >= `epoch` (0: once its MLflow run is open, before any epoch ends); wait until it is gone.
    stderr goes into the same pipe, so a chatty run cannot block on a full stderr pipe."""
    import pytest

    proc = subprocess.Popen([DLRUN, *map(str, args)], cwd=workdir, env=dlrun_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if (epoch == 0 and "mlflow run" in line) or (
                    epoch and line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= epoch):
                proc.send_signal(sig)
                break
        else:
            pytest.fail("training never got there:\n" + "".join(seen)[-3000:])
        proc.wait(timeout=120)
    finally:
        proc.kill()


def _checked(proc, args, expect):
    if expect is not None and proc.returncode != expect:
        raise AssertionError(
            f"dlrun {' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def workdir(tmp_path) -> Path:
    """An empty working directory; MLflow's default store lands in it as mlflow.db."""
    return tmp_path


@pytest.fixture
def run_dlrun(workdir):
    """run_dlrun(*args, expect=0, env=None) -> result with returncode, stdout, stderr: `dlrun`
    called in this process, in `workdir`."""

    def run(*args, expect: int | None = 0, env: dict | None = None, timeout: int | None = None):
        return _checked(dlrun_inprocess(args, workdir, env), args, expect)

    return run


@pytest.fixture
def run_process(workdir):
    """run_process(*args, expect=0, env=None, timeout=300): the real console script (e2e tier)."""

    def run(*args, expect: int | None = 0, env: dict | None = None, timeout: int = 300):
        return _checked(dlrun_process(args, workdir, env, timeout), args, expect)

    return run


def store_runs(client):
    """Every run in a store, newest first."""
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], order_by=["attributes.start_time DESC"])


@pytest.fixture
def mlflow_client(workdir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")


@pytest.fixture
def runs(mlflow_client):
    """runs() -> every run in the store, newest first."""
    return lambda: store_runs(mlflow_client)


# One trained run per task family, shared by every test that only reads it (logging, predict,
# pyfunc, export, eval). Each lives in its own folder and store. A test that adds to a shared
# run (eval, export) must not assume it is the only one that did.
SHARED_RUNS = {
    "tabular": ("train", "trainer.epochs=3", "tracking.system_metrics_interval=0.5"),
    "cnn": ("train", "task=cnn", "trainer=smoke"),
    "sequence": ("train", "task=sequence", "trainer=smoke"),
    "text": ("train", "task=text", "trainer=smoke"),
}


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """shared_run(name) -> namespace(workdir, client, run, proc, run_dlrun) for SHARED_RUNS[name],
    trained once per session in process; run_dlrun(*args) runs further commands in its folder."""
    from mlflow.tracking import MlflowClient

    cache: dict[str, types.SimpleNamespace] = {}

    def get(name: str) -> types.SimpleNamespace:
        if name not in cache:
            workdir = tmp_path_factory.mktemp(f"shared_{name}")
            args = SHARED_RUNS[name]
            proc = _checked(dlrun_inprocess(args, workdir), args, 0)
            client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
            (run,) = store_runs(client)

            def again(*more, expect: int | None = 0, env: dict | None = None, _dir=workdir):
                return _checked(dlrun_inprocess(more, _dir, env), more, expect)

            cache[name] = types.SimpleNamespace(workdir=workdir, client=client, run=run, proc=proc,
                                                run_dlrun=again)
        return cache[name]

    return get


def stderr_line(proc) -> str:
    """The user-facing error output, asserted to be one line without a traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _tf_noise(ln)]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, lines
    return lines[0]


def _tf_noise(line: str) -> bool:
    """TensorFlow's C++ start-up chatter on stderr (not dlrun's output)."""
    return line[:1] in "IWE" and line[1:5].isdigit() or line.startswith(("WARNING: All log messages",
                                                                           "To enable the following"))


@pytest.fixture
def compose():
    """compose(*overrides) -> the Hydra config dlrun would build."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dlrun.config_tree import config_dir

    def make(*overrides):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))

    return make


def UnitRun(workdir: Path | None = None, **trainer):
    """A real run handle (dlrun/training/handle.py) for in-process agent runs of the RL loop
    (dlrun/rl/learn.py): the trainer's default callbacks (best checkpoint in `workdir`, a new
    temporary folder by default), no MLflow and no progress display. `trainer`: overrides of
    the trainer config, e.g. early_stopping={"enabled": True, "patience": 1}."""
    import tempfile

    from omegaconf import OmegaConf

    from dlrun.config import TrainerConfig
    from dlrun.contract import Objective
    from dlrun.training.handle import Handle

    cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer)
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dlrun-unit-run-"))
    return Handle(cfg, folder, Objective("mean_return", maximize=True), has_val=True)


def tiny_ddpg_cfg(**overrides):
    """A DDPG agent config small enough for a few hundred Pendulum steps in a unit test."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "ddpg", "hidden": [8], "critic_hidden": [8], "activation": "relu",
                             "actor_lr": 1e-3, "critic_lr": 1e-3, "gamma": 0.98, "tau": 0.5, "buffer_size": 1000,
                             "batch_size": 16, "learning_starts": 100, "train_freq": 50, "gradient_steps": 2,
                             "noise": "gaussian", "noise_std": 0.1, "log_every": 100, **overrides})

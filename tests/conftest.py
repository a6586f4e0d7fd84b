"""Shared fixtures: run the real `dlrun` console script and read the real MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DLRUN = shutil.which("dlrun", path=str(Path(sys.executable).parent)) or shutil.which("dlrun")


def dlrun_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "160"})
    env.update(extra)
    return env


@pytest.fixture
def workdir(tmp_path) -> Path:
    """An empty working directory; MLflow's default store lands in it as mlflow.db."""
    return tmp_path


@pytest.fixture
def run_dlrun(workdir):
    """run_dlrun(*args, expect=0, env=None, timeout=300) -> CompletedProcess (text output)."""

    def run(*args, expect: int | None = 0, env: dict | None = None, timeout: int = 300):
        assert DLRUN, "the dlrun console script is not installed"
        proc = subprocess.run([DLRUN, *map(str, args)], cwd=workdir, env=dlrun_env(**(env or {})),
                              capture_output=True, text=True, timeout=timeout)
        if expect is not None and proc.returncode != expect:
            raise AssertionError(
                f"dlrun {' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    return run


@pytest.fixture
def mlflow_client(workdir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")


@pytest.fixture
def runs(mlflow_client):
    """runs() -> every run in the store, newest first."""

    def get():
        exps = mlflow_client.search_experiments()
        return mlflow_client.search_runs([e.experiment_id for e in exps], order_by=["attributes.start_time DESC"])

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

    from dlrun.cli import config_dir

    def make(*overrides):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))

    return make


class UnitRun:
    """The bits of the run handle an RL agent's train loop touches, for in-process unit runs."""

    should_stop = False

    def progress(self, total, unit): ...
    def advance(self, done, metrics=None): ...
    def log(self, step, metrics): ...
    def keep_best(self, model, value, step): ...


def tiny_ddpg_cfg(**overrides):
    """A DDPG agent config small enough for a few hundred Pendulum steps in a unit test."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "ddpg", "hidden": [8], "critic_hidden": [8], "activation": "relu",
                             "actor_lr": 1e-3, "critic_lr": 1e-3, "gamma": 0.98, "tau": 0.5, "buffer_size": 1000,
                             "batch_size": 16, "learning_starts": 100, "train_freq": 50, "gradient_steps": 2,
                             "noise": "gaussian", "noise_std": 0.1, "log_every": 100, **overrides})

"""The declared dependencies (issue 21): constraints.txt, the tested set CI installs against, pins
every requirement of pyproject.toml inside its range; the private APIs that set the upper bounds
are still there; the gymnasium floor has what dlrun's RL code uses (e2e: installs that release)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
# the platform constraints.txt is resolved for (README: Development)
PLATFORM = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "python_version": "3.11", "python_full_version": "3.11.7", "implementation_name": "cpython"}


def declared() -> list[tuple[str, Requirement]]:
    """(extra or "", requirement) for the dependencies and every extra in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return [(extra, Requirement(r)) for extra, reqs in groups.items() for r in reqs]


def test_constraints_pin_every_declared_requirement_inside_its_range():
    pins = {canonicalize_name(name): version for name, version in
            re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)}
    stale = []
    for extra, req in declared():
        if req.marker and not req.marker.evaluate({**PLATFORM, "extra": extra}):
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin, prereleases=True):
            stale.append(f"{req} ({'extra ' + extra if extra else 'dependency'}): constraints.txt has {pin}")
    assert not stale, "refresh constraints.txt (README: Development): " + "; ".join(stale)


def test_private_apis_behind_the_upper_bounds_exist():
    """Each upper bound in pyproject.toml is there for one of these; a constraints refresh that
    moves past one of them fails here first, naming it."""
    import keras
    from keras.src.losses.loss import unscale_loss_for_distribution  # noqa: F401 (training/loop.py)
    from mlflow.data.dataset import Dataset

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    assert hasattr(model, "_loss_tracker")  # training/loop.py
    assert callable(Dataset._to_mlflow_entity)  # tracking/datasets.py


def floor(name: str) -> str:
    (req,) = [r for extra, r in declared() if not extra and canonicalize_name(r.name) == name]
    (version,) = [s.version for s in req.specifier if s.operator == ">="]
    return version


@pytest.mark.e2e
def test_gymnasium_floor_runs_the_rl_rollout(tmp_path):
    """Install the declared gymnasium floor beside this environment and drive dlrun's vector env
    plumbing (dlrun/rl/rollout.py) with it: the vector env with SAME_STEP autoreset, the vector
    wrappers, RunningMeanStd, dlrun's registered envs."""
    version = floor("gymnasium")
    target = tmp_path / "gymnasium-floor"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target,
                          f"gymnasium=={version}"], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    probe = """
import sys
import gymnasium as gym
from gymnasium.wrappers.utils import RunningMeanStd
from omegaconf import OmegaConf
assert gym.__file__.startswith(sys.argv[1]), gym.__file__  # the floor release, not this environment's
from dlrun.rl.rollout import env_factory, finished_episodes, vector_env
from dlrun.rl.envs import make
envs = vector_env(env_factory(OmegaConf.create({"id": "CartPole-v1"})), 2, normalize_reward=True)
envs.reset(seed=0)
episodes = []
for _ in range(300):
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    episodes += finished_episodes(info)
assert episodes and all(length > 0 for _, _, length in episodes), episodes
rms = RunningMeanStd(shape=(4,))
rms.update(obs)
make("dlrun/GridWorld-v0").reset(seed=0)
print(gym.__version__, len(episodes))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert Version(run.stdout.split()[0]) == Version(version)

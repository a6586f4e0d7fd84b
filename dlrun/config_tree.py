"""The packaged Hydra config tree: where it is and which options each group has.

A module of its own so that the CLI, inference (eval/predict of a logged run), the explain
options and scripts share it without importing each other. Nothing here imports TensorFlow,
MLflow or Hydra.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# the config groups a user picks by name (task=cnn, agent=ppo, ...)
GROUPS = ("task", "model", "data", "agent", "env", "strategy", "trainer", "tracking", "experiment", "hparams_search")


def config_dir() -> Path:
    """The packaged Hydra config tree (top-level configs/ in a checkout)."""
    return Path(str(resources.files("dlrun.configs")))


def group_options(group: str) -> list[str]:
    """The option names of one config group (its YAML files), sorted; [] for an unknown group."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []

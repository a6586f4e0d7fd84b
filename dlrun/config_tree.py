"""The packaged Hydra config tree: where it is and which options each group has.

A module of its own so that the CLI, inference (eval/predict of a logged run), the explain
options and scripts share it without importing each other. Nothing here imports TensorFlow,
MLflow or Hydra.
"""

from __future__ import annotations

from functools import cache
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


@cache
def option_defaults(group: str, name: str) -> dict:
    """The values the option file `<group>/<name>.yaml` sets for its group ({} without one): for
    a group whose options are named after a registry entry (model=lstm builds the `lstm` model),
    that entry's defaults, the one place they are written. A task file sets other groups too
    (trainer, model); only its `task` node is the task's."""
    import yaml

    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    if group == "task":
        values = values.get("task") or {}
    return {k: v for k, v in values.items() if k != "defaults"}


def with_option_defaults(group: str, node, name: str):
    """`node` (a mapping) over the values of the option file `<group>/<name>.yaml`; `node`
    itself when it already has every key the file sets."""
    base = {k: v for k, v in option_defaults(group, name).items() if v != "???"}  # required: the user's to give
    if not set(base).difference(node.keys()):  # keys() also counts ??? (required) values
        return node
    from omegaconf import OmegaConf

    return OmegaConf.merge(base, node)

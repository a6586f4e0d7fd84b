"""Model builders, one registry. A builder takes (model_cfg, info) and returns an uncompiled
keras.Model whose last layer is the task's output head (see heads.py).

Importing this package imports every module in it to fill MODELS; builders import Keras
inside the function.
"""

import importlib
import pkgutil

from dlrun.errors import DlrunError
from dlrun.registry import MODELS

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "heads":
        importlib.import_module(f"{__name__}.{_m.name}")


def models_for(task: str) -> list[str]:
    return [e.name for e in MODELS.entries() if task in e.tags]


def build_model(model_cfg, info, task: str):
    """Look the builder up, check it serves `task`, and build."""
    entry = MODELS.entry(model_cfg.name)
    if entry.tags and task not in entry.tags:
        raise DlrunError(
            f"model '{entry.name}' does not fit task '{task}'",
            f"models for {task}: {', '.join(models_for(task)) or 'none'}",
        )
    return entry.obj(model_cfg, info)

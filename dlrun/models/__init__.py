"""Model builders, one registry. A builder takes (model_cfg, info) and returns an uncompiled
keras.Model whose last layer is the task's output head (see heads.py).

Importing this package imports every module in it to fill MODELS; builders import Keras
inside the function.
"""

import importlib
import pkgutil

from dlrun.registry import MODELS

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "heads":
        importlib.import_module(f"{__name__}.{_m.name}")


def build_model(model_cfg, info, task: str):
    """Look the builder up, check it serves `task`, and build it from `model_cfg` over its
    option file's values (configs/model/<name>.yaml: the builders read keys, not defaults)."""
    return MODELS.build(model_cfg, task, info)

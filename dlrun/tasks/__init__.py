"""Tasks: one module each. Importing this package imports every module in it, which fills
the TASKS registry (modules keep TensorFlow imports inside functions)."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

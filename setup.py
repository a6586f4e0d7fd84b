"""Package discovery for setuptools (the rest of the metadata is in pyproject.toml).

Every package under dlrun/ is found (a new task family's sub-package ships in the wheel without
being listed), and the top-level configs/ folder -- the Hydra tree people edit -- ships as
dlrun.configs, so a non-editable install finds its configs from any directory. The Optuna
sweeper ships as hydra_plugins.dlrun_optuna, where Hydra discovers plugins.
"""

from setuptools import find_namespace_packages, find_packages, setup

# every config group folder is a (data-only) sub-package of dlrun.configs; listing them keeps
# setuptools from warning about "importable packages absent from the configuration"
CONFIG_PACKAGES = ["dlrun.configs", *(f"dlrun.configs.{p}" for p in find_namespace_packages(where="configs"))]

setup(
    # hydra_plugins is a namespace package shared with other Hydra plugins (no __init__.py): only ours ships
    packages=[*find_packages(include=["dlrun", "dlrun.*"]), *CONFIG_PACKAGES,
              *find_namespace_packages(include=["hydra_plugins.dlrun_*"])],
    package_dir={"dlrun.configs": "configs"},
)

"""Package discovery for setuptools (the rest of the metadata is in pyproject.toml).

Every package under dlrun/ is found (a new task family's sub-package ships in the wheel without
being listed), and the top-level configs/ folder -- the Hydra tree people edit -- ships as
dlrun.configs, so a non-editable install finds its configs from any directory.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["dlrun", "dlrun.*"]), "dlrun.configs"],
    package_dir={"dlrun.configs": "configs"},
)

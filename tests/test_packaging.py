"""The wheel ships every sub-package and the Hydra configs: built, installed into a fresh
virtual environment and run from another folder (issue 6)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import dlrun_env


@pytest.mark.e2e
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    root = Path(__file__).resolve().parents[1]
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(root)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("dlrun-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(root)).replace("/", ".") for p in (root / "dlrun").rglob("__init__.py")}
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages <= shipped, packages - shipped
    assert "dlrun/configs/config.yaml" in names and "dlrun/configs/task/tabular.yaml" in names
    assert "hydra_plugins/dlrun_optuna/__init__.py" in names  # the Optuna sweeper, where Hydra finds plugins
    assert "hydra_plugins/__init__.py" not in names  # a namespace package shared with other plugins

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies come from this environment (no network); dlrun itself only from the wheel
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # what pip does for a pure-Python wheel, minus the console script
    python = venv / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import dlrun; print(dlrun.__file__)"], cwd=elsewhere, env=dlrun_env(),
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout
    listed = subprocess.run([python, "-m", "dlrun", "list"], cwd=elsewhere, env=dlrun_env(), capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "tabular" in listed.stdout, listed.stderr[-2000:]
    smoke = subprocess.run([python, "-m", "dlrun", "train", "trainer=smoke"], cwd=elsewhere, env=dlrun_env(),
                           capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (elsewhere / "mlflow.db").is_file() and list((elsewhere / "outputs").glob("*/*/served/model.keras"))

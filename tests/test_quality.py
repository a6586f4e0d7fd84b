"""The slow tier (`python -m pytest -m slow`, CI with DLRUN_CI_FULL=1): each preset quality
script runs its presets with the real CLI, over its seeds, and exits 1 when a preset misses its
bar. The bars live in the scripts only; these tests run them as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dlrun_env

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * 3600)]


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*_quality.py")))
def test_presets_meet_their_bars(script, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPTS / script)], cwd=tmp_path, env=dlrun_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"

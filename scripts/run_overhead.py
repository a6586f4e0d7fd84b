"""What a run costs beyond importing TensorFlow: `dlrun train trainer=smoke` against
`python -c "import tensorflow"`, in a fresh folder (the run creates ./mlflow.db) and in a
folder whose store exists, and a 5-job sweep in one process (Hydra's basic launcher) against
one run; with --before, another installation's dlrun (an environment where main, or any
other commit, is installed) runs the same commands in the same rounds, side by side.

    python scripts/run_overhead.py [--repeats 5] [--jobs 5] [--before /path/to/venv/bin/python]

Every command runs as a subprocess in a temporary folder; after one warm-up round the rounds
run the commands side by side (import, fresh, existing, sweep), so a change in the machine's
load touches all of them alike. The table gives the median wall-clock seconds, the median CPU
seconds (user + system, less sensitive to other processes on a shared machine) and the median
of each round's difference: the run's overhead beyond the import, and the sweep's cost per
extra job beyond one run. The script checks that every run finished in MLflow. (A new store
is a copy of an empty one built once per MLflow version and schema in ~/.cache/dlrun; the warm-up round
builds it if it is not there yet. docs/overhead.md has the numbers and where the time goes.)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one command; exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _env() -> dict:
    """This process' environment; CPU only unless CUDA_VISIBLE_DEVICES says otherwise."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def finished_runs(folder: Path) -> int:
    """FINISHED runs in the folder's store (sweep parents included)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    return sum(r.info.status == "FINISHED" for r in client.search_runs(ids, max_results=10000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds after one warm-up round")
    parser.add_argument("--jobs", type=int, default=5, help="jobs of the sweep")
    parser.add_argument("--before", metavar="PYTHON",
                        help="the python of another environment with dlrun installed: its runs side by side")
    a = parser.parse_args()
    seeds = ",".join(str(i + 1) for i in range(a.jobs))
    commands = {"import": [sys.executable, "-c", "import tensorflow"]}
    sides = {"": sys.executable, **({"before ": a.before} if a.before else {})}
    for side, python in sides.items():
        dlrun = shutil.which("dlrun", path=str(Path(python).parent)) or sys.exit(f"no dlrun beside {python}")
        run = [dlrun, "train", "trainer=smoke"]
        commands.update({f"{side}fresh": run, f"{side}existing": run,
                         f"{side}sweep": [dlrun, "train", "-m", "trainer=smoke", f"trainer.seed={seeds}"]})
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    with tempfile.TemporaryDirectory(prefix="dlrun-overhead-") as tmp:
        order = ["import", *(f"{side}{k}" for k in ("fresh", "existing", "sweep") for side in sides)]
        for i in range(1 + a.repeats):
            for name in order:
                args = commands[name]
                side = name.removesuffix(name.split()[-1])
                folder = Path(tmp) / (f"{side}existing".replace(" ", "-") if name.endswith(("existing", "sweep"))
                                      else f"{name}-{i}".replace(" ", "-"))
                folder.mkdir(exist_ok=True)
                result = timed(args, folder)
                if i:  # round 0 warms the caches and creates the existing store
                    times[name].append(result)
            print(f"round {i} (load {os.getloadavg()[0]:.1f}): " + "  ".join(f"{k} {v[-1][0]:.1f}s" for k, v in times.items() if i and v),
                  file=sys.stderr, flush=True)
        expected = (1 + a.repeats) * (1 + a.jobs + 1)  # each round: one run, the jobs and their parent
        for side in sides:
            found = finished_runs(Path(tmp) / f"{side}existing".replace(" ", "-"))
            fresh_ok = all(finished_runs(Path(tmp) / f"{side}fresh-{i}".replace(" ", "-")) == 1
                           for i in range(1 + a.repeats))
            if found != expected or not fresh_ok:
                sys.exit(f"{side}: expected {expected} finished runs in the existing store, found {found}; "
                         f"fresh ok: {fresh_ok}")

    def med(name: str, k: int) -> float:
        return statistics.median(t[k] for t in times[name])

    def paired(name: str, base: str, k: int, per: int = 1) -> float:
        return statistics.median((x[k] - y[k]) / per for x, y in zip(times[name], times[base], strict=True))

    rows = [('python -c "import tensorflow"', "import", None, 1, "")]
    for side in sides:
        rows += [
            (f"{side}dlrun train trainer=smoke, fresh folder", f"{side}fresh", "import", 1, "beyond the import"),
            (f"{side}dlrun train trainer=smoke, existing store", f"{side}existing", "import", 1, "beyond the import"),
            (f"{side}{a.jobs}-job sweep -m trainer.seed={seeds}", f"{side}sweep", f"{side}existing", a.jobs - 1,
             "per extra job"),
        ]
    load = os.getloadavg()
    print(f"median of {a.repeats} after a warm-up, {os.cpu_count()} CPU cores, load average at the end "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (seconds)")
    print(f"{'command':<52} {'wall':>6} {'cpu':>6} {'Δ wall':>7} {'Δ cpu':>6}")
    for label, name, base, per, what in rows:
        delta = f"{paired(name, base, 0, per):+7.2f} {paired(name, base, 1, per):+6.2f}  {what}" if base else ""
        print(f"{label:<52} {med(name, 0):6.2f} {med(name, 1):6.2f} {delta}")


if __name__ == "__main__":
    main()

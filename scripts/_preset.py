"""Shared by the scripts/*_quality.py: one `dlrun train` in a fresh folder with its own MLflow
store, the finished run read back while the folder still exists, and the same preset repeated
over several seeds with every number reported as mean ± std (a bar is checked on the mean)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

SEEDS = (42, 1, 2)  # README numbers come from >= 3 seeds


@dataclass
class Trained:
    command: str
    wall_s: float
    returncode: int
    run: Any = None  # the MLflow run (None when dlrun failed)
    client: Any = None

    @property
    def metrics(self) -> dict:
        return self.run.data.metrics if self.run else {}

    def dlrun(self, *args) -> None:
        """`dlrun <args> run_id=<this run>` in the run's folder and store (dlrun attack, explain,
        eval...); RuntimeError with the output's tail when it fails."""
        folder = self.client.tracking_uri.split("sqlite:///", 1)[1].rsplit("/", 1)[0]
        proc = subprocess.run(["dlrun", *args, f"run_id={self.run.info.run_id}"], cwd=folder, capture_output=True,
                              text=True, env={**os.environ, "MLFLOW_TRACKING_URI": self.client.tracking_uri})
        if proc.returncode != 0:
            raise RuntimeError(f"dlrun {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def failed(self, preset: str) -> dict:
        return {"preset": preset, "command": self.command, "error": self.returncode, "wall_s": round(self.wall_s, 1)}


@contextlib.contextmanager
def trained(args: list[str], overrides: list[str], name: str):
    """`with trained(["experiment=cnn"], overrides, "cnn") as t:` -> Trained (t.run is None on failure,
    after dlrun's output tail was printed)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix=f"dlrun-{name}-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cmd = ["dlrun", "train", *args, *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              capture_output=True, text=True)
        t = Trained(" ".join(cmd), time.perf_counter() - start, proc.returncode)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        else:
            t.client = MlflowClient(tracking_uri=uri)
            t.run = [r for e in t.client.search_experiments() for r in t.client.search_runs([e.experiment_id])][0]
        yield t


def parse(argv: list[str], seeds=SEEDS) -> tuple[list[str], list[str], list[int]]:
    """(names, key=value overrides, seeds): `--seeds 42 1 2` anywhere in argv (default `seeds`)."""
    names, overrides, chosen, in_seeds = [], [], None, False
    for a in argv:
        if a == "--seeds":
            in_seeds, chosen = True, []
        elif in_seeds and a.lstrip("-").isdigit():
            chosen.append(int(a))
        else:
            in_seeds = False
            (overrides if "=" in a else names).append(a)
    if chosen is not None and not chosen:
        raise SystemExit("--seeds needs at least one integer")
    return names, overrides, list(chosen if chosen is not None else seeds)


def summarize(name: str, results: list[dict]) -> dict:
    """One name's results over seeds: every number as mean and std (sample std, 0 for one seed),
    the seeds' commands, and the failures."""
    import statistics

    ok = [r for r in results if "error" not in r]
    keys = [k for k in (ok[0] if ok else {}) if k != "seed" and all(isinstance(r.get(k), int | float) and not isinstance(
        r.get(k), bool) for r in ok)]
    mean = {k: statistics.fmean(r[k] for r in ok) for k in keys}
    std = {k: statistics.stdev([r[k] for r in ok]) if len(ok) > 1 else 0.0 for k in keys}
    return {"name": name, "seeds": [r.get("seed") for r in results], "mean": mean, "std": std,
            "commands": [r.get("command") for r in results], "failed": [r for r in results if "error" in r]}


def over_seeds(name: str, seeds: list[int], one, seed_override=lambda s: [f"trainer.seed={s}"]) -> dict:
    """`one(overrides) -> result dict` once per seed (its override appended), then summarize."""
    results = []
    for s in seeds:
        r = one(seed_override(s))
        results.append({**r, "seed": s})
    return summarize(name, results)


def fmt(mean: float, std: float) -> str:
    digits = 4 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(summaries: list[dict], keys: list[str] | None = None) -> str:
    """A plain text table: one row per name, one `mean ± std` column per key (all numbers when
    keys is None), plus the bar's verdict where there is one."""
    keys = keys or list(dict.fromkeys(k for s in summaries for k in s["mean"]))
    head = ["name", "n", *keys, "bar"]
    rows = []
    for s in summaries:
        cells = [fmt(s["mean"][k], s["std"][k]) if k in s["mean"] else "-" for k in keys]
        verdict = {True: "met", False: "MISSED", None: ""}[s.get("pass")]
        if s["failed"]:
            verdict = f"{len(s['failed'])} failed"
        rows.append([s["name"], str(len(s["seeds"]) - len(s["failed"])), *cells, verdict])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows])


def run_all(argv: list[str], presets: tuple, run, check=None, keys: list[str] | None = None,
            seed_override=lambda s: [f"trainer.seed={s}"]) -> int:
    """The scripts' command line: preset names (default `presets`), key=value overrides and
    `--seeds S ...` (default SEEDS). `run(preset, overrides) -> result dict` runs once per seed;
    `check(preset, means) -> bool | None` is the bar, decided on the mean over seeds. Prints a
    table (mean ± std) and the summaries as JSON; exit code 1 when a preset missed its bar or failed."""
    import json

    names, overrides, seeds = parse(argv)
    summaries = []
    for p in names or list(presets):
        s = over_seeds(p, seeds, lambda extra, p=p: run(p, [*overrides, *extra]), seed_override)
        s["pass"] = check(p, s["mean"]) if check is not None and s["mean"] else None
        summaries.append(s)
        print(f"{p}: " + ", ".join(f"{k} {fmt(s['mean'][k], s['std'][k])}" for k in s["mean"]),
              flush=True)
    print(json.dumps(summaries, indent=1, default=str))
    print(f"\nseeds {' '.join(map(str, seeds))}" + (f"; overrides {' '.join(overrides)}" if overrides else ""))
    print(table(summaries, keys))
    return 0 if all(s.get("pass") is not False and not s["failed"] for s in summaries) else 1


def real_data(argv: list[str], doc: str, files: dict, one, row, legend: str) -> int:
    """The main of the scripts/real_data_*.py: `DATA_DIR [names] [--seeds ...] [key=value ...]`.

    files: name -> the file or folder it needs in DATA_DIR (None: embedded). Per name,
    `one(folder, name, overrides, seed_overrides) -> result dict` once per seed, then
    `row(name, summary) -> (table line, bar met)`. Lines print as they come and again, all
    together under `legend`, at the end. Exit code 1 when a name fails or misses its bar."""
    from pathlib import Path

    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise SystemExit(doc)
    folder = Path(argv[0]).expanduser().resolve()
    names, overrides, seeds = parse(argv[1:])
    missing = [files[n] for n in names or files if files[n] and not (folder / files[n]).exists()]
    if missing:
        raise SystemExit(f"{folder}: missing {', '.join(missing)} (see the script's docstring)")
    ok, lines = True, []
    for name in names or list(files):
        s = over_seeds(name, seeds, lambda extra, name=name: one(folder, name, overrides, extra))
        line, met = (f"| {name} | failed: {s['failed'][:1]} |", False) if s["failed"] or not s["mean"] \
            else row(name, s)
        ok, lines = ok and met, [*lines, line]
        print(line, flush=True)
        if s["commands"] and s["commands"][0]:
            print("   " + s["commands"][0], flush=True)
    print(f"\nseeds {' '.join(map(str, seeds))}; {legend}")
    print("\n".join(lines))
    return 0 if ok else 1

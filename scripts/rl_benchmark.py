"""PPO speed on CartPole-v1: dlrun's `experiment=cartpole_ppo` against Stable-Baselines3's PPO with
rl-baselines3-zoo's CartPole hyperparameters (the same ones dlrun's PPO defaults to), side by side,
one after the other, on the same seeds.

    python scripts/rl_benchmark.py                       # 3 seeds, 100k steps each
    python scripts/rl_benchmark.py --seeds 0 1 --steps 50000 --sb3-python /tmp/sb3/bin/python

Both sides use the same protocol: a 10-episode greedy evaluation every 8,192 env steps whose time
is not counted; reported are the env steps and training seconds at which it first reaches 475,
the steps per second over the run (training time only, and whole wall time), and a final
50-episode greedy evaluation (dlrun: its test/mean_return on 50 fixed seeds).

SB3 is a benchmark-only install, never a dependency of dlrun: it runs in its own Python
(`--sb3-python`, default: this Python when it can import stable_baselines3, else /tmp/sb3/bin/python
when that exists), with the anchor script given by `--sb3-script` (../shared/anchors/
sb3_ppo_cartpole.py by default). Without SB3 only dlrun's side is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVERY = 8192


def dlrun_side(seed: int, steps: int, extra: list[str]) -> dict:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="dlrun-rlbench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cmd = ["dlrun", "train", "experiment=cartpole_ppo", f"trainer.seed={seed}", f"task.total_steps={steps}",
               f"task.eval.every_steps={EVERY}", "task.eval.during=10", "task.eval.episodes=50",
               "tracking.system_metrics=false", "tracking.log_plots=false", *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            return {"seed": seed, "error": proc.returncode}
        client = MlflowClient(tracking_uri=uri)
        run = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])][0]
        evals = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/mean_return")}
        seconds = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/seconds")}
        hit = next(((s, seconds[s]) for s in sorted(evals) if evals[s] >= 475 and s in seconds), None)
        last = max(seconds)
        return {"seed": seed, "first_475_steps": hit and hit[0], "first_475_s": hit and round(hit[1], 2),
                "steps_per_s": round(last / seconds[last]), "wall_steps_per_s": round(last / wall),
                "train_s": round(seconds[last], 1), "process_wall_s": round(wall, 1),
                "final": round(run.data.metrics["test/mean_return"], 1)}


def sb3_python(given: str | None) -> str | None:
    if given:
        return given
    try:
        import stable_baselines3  # noqa: F401

        return sys.executable
    except ImportError:
        return "/tmp/sb3/bin/python" if Path("/tmp/sb3/bin/python").exists() else None


def sb3_side(python: str, script: Path, seed: int, steps: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([python, str(script), str(seed), str(steps)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = next((x for x in proc.stdout.splitlines() if x.startswith("seed ")), "")
    m = re.search(r"wall ([\d.]+)s sps (\d+) final ([\d.]+).*first475 (None|\((\d+), ([\d.]+)\))", line)
    if proc.returncode != 0 or not m:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        return {"seed": seed, "error": proc.returncode}
    hit = (int(m.group(5)), round(float(m.group(6)), 2)) if m.group(5) else None
    # the anchor's wall includes its evaluations; its printed sps is steps / that wall
    return {"seed": seed, "first_475_steps": hit and hit[0], "first_475_s": hit and hit[1],
            "wall_steps_per_s": int(m.group(2)), "train_s": float(m.group(1)), "process_wall_s": round(wall, 1),
            "final": float(m.group(3))}


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    hits = [r["first_475_s"] for r in ok if r.get("first_475_s") is not None]
    out = {"runs": len(rows), "reached_475": len(hits),
           "median_first_475_s": round(statistics.median(hits), 2) if hits else None,
           "max_first_475_s": max(hits) if hits else None,
           "median_first_475_steps": statistics.median([r["first_475_steps"] for r in ok if r.get("first_475_steps")])
           if hits else None,
           "median_wall_steps_per_s": round(statistics.median([r["wall_steps_per_s"] for r in ok])) if ok else None}
    if ok and "steps_per_s" in ok[0]:
        out["median_train_steps_per_s"] = round(statistics.median([r["steps_per_s"] for r in ok]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--sb3-python", default=None)
    ap.add_argument("--sb3-script", type=Path, default=ROOT.parent / "shared/anchors/sb3_ppo_cartpole.py")
    ap.add_argument("overrides", nargs="*", help="extra dlrun overrides, e.g. agent.jit_compile=false")
    args = ap.parse_args(argv)
    python = sb3_python(args.sb3_python)
    use_sb3 = python is not None and args.sb3_script.exists()
    if not use_sb3:
        print("stable-baselines3 not found (see --sb3-python): timing dlrun only", file=sys.stderr)
    results = {"dlrun": [], "sb3": []}
    for seed in args.seeds:  # alternate, so that a change in machine load hits both sides alike
        results["dlrun"].append(dlrun_side(seed, args.steps, args.overrides))
        print("dlrun", json.dumps(results["dlrun"][-1]), flush=True)
        if use_sb3:
            results["sb3"].append(sb3_side(python, args.sb3_script, seed, args.steps))
            print("sb3  ", json.dumps(results["sb3"][-1]), flush=True)
    report = {side: summary(rows) for side, rows in results.items() if rows}
    print(json.dumps(report, indent=1))
    if use_sb3 and report["dlrun"]["median_first_475_s"] and report["sb3"]["median_first_475_s"]:
        ratio = report["sb3"]["median_first_475_s"] / report["dlrun"]["median_first_475_s"]
        print(f"time to 475: dlrun {report['dlrun']['median_first_475_s']} s, SB3 "
              f"{report['sb3']['median_first_475_s']} s (median over {len(args.seeds)} seeds): dlrun is "
              f"{ratio:.2f}x {'faster' if ratio > 1 else 'slower'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the RL presets with the real CLI over several seeds and print mean evaluation return, the
baselines, env steps and wall time (mean ± std over the seeds).

    python scripts/rl_quality.py                          # cartpole_ppo gridworld_q policy_iteration, seeds 42 1 2
    python scripts/rl_quality.py orso_ppo cartpole_dqn    # the longer ones (minutes per seed on 2 cores)
    python scripts/rl_quality.py cartpole_reinforce gridworld_mc bandit
    python scripts/rl_quality.py cartpole_ppo --seeds 42

Each preset runs as `dlrun train experiment=NAME [overrides]` in a temporary folder with its own
MLflow store, once per seed (trainer.seed), and the metrics are read back from the run. Exit code 1
when a preset misses its bar on the mean over the seeds.
"""

from __future__ import annotations

import sys

from _preset import run_all, trained

PRESETS = ("cartpole_ppo", "gridworld_q", "policy_iteration")
# preset -> (metric, minimum)
BARS = {"cartpole_ppo": ("test/mean_return", 475.0), "cartpole_dqn": ("test/mean_return", 475.0),
        "orso_ppo": ("test/optimal_ratio", 0.95), "gridworld_q": ("test/optimal_action_fraction", 1.0),
        "policy_iteration": ("test/optimal_ratio", 1.0), "gridworld_mc": ("test/optimal_action_fraction", 1.0),
        "cartpole_reinforce": ("test/mean_return", 475.0), "pendulum_ddpg": ("test/mean_return", -250.0)}
SHOWN = ("test/mean_return", "test/std_return", "baseline/random/mean_return", "baseline/optimal/mean_return",
         "test/optimal_ratio", "test/optimal_action_fraction", "timing/fit_seconds", "timing/steps_per_second",
         *(f"bandit/{m}/{k}" for m in ("greedy", "epsilon", "ucb") for k in ("mean_reward", "optimal_action_pct")))


def run(preset: str, overrides: list[str]) -> dict:
    with trained([f"experiment={preset}"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        r = t.run
        m, wall, cmd = t.metrics, t.wall_s, t.command.split()
        steps = [x.step for x in t.client.get_metric_history(r.info.run_id, "val/mean_return")]
    result = {"command": " ".join(cmd), "wall_s": round(wall, 1),
              "env_steps": max(steps, default=0)}
    result.update({k: round(m[k], 4) for k in SHOWN if k in m})
    print(f"experiment={preset}: " + ", ".join(f"{k}={result[k]}" for k in result if k not in ("preset", "command")),
          flush=True)
    return result


def check(preset: str, mean: dict) -> bool | None:
    if preset not in BARS:
        return None
    key, bar = BARS[preset]
    return mean.get(key, float("-inf")) >= bar


def main(argv: list[str]) -> int:
    return run_all(argv, PRESETS, run, check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

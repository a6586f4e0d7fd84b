"""The one RL learning loop: the schedule every agent shares, around what is the agent's own.

An agent (PPO, DQN, DDPG, REINFORCE, the tabular ones, the bandit, dynamic programming) only
collects and updates: `start` builds its envs and buffers, each `learn()` call runs one of its
own units (a PPO rollout and update, DQN's `log_every` env steps, a few whole episodes) and
returns that unit's metrics with Keras-style names (`loss`, `episode_return`, ...). Everything
around it is here, once, in the spirit of Stable-Baselines3's `BaseAlgorithm.learn` with its
`EvalCallback`:

- the evaluation cadence (`task.eval.every_steps`, and always at the end): greedy episodes on
  the validation seeds, logged as `val_mean_return`;
- the run's Keras callbacks (dlrun/training/handle.py `Handle.begin`/`end_epoch`/`end`): each
  evaluation is an "epoch" to them, so the best checkpoint, early stopping, Optuna reports and
  pruning, and TensorBoard mean what they mean for a Keras fit, counted in evaluations;
- logging per unit at the environment step (train/… and val/… added by the tracker), the
  progress line, the history handed back in `Fit`, training time without the evaluations;
- stopping: the budget, a stop request (Ctrl-C, SIGTERM), early stopping or pruning
  (`model.stop_training`), and a loss that is no longer finite.
"""

from __future__ import annotations

import math
import time
from functools import partial

from dlrun.contract import Fit
from dlrun.errors import DlrunError

SHOWN = ("episode_return", "val_mean_return")  # what the progress line shows of a point
NAN_HINT = "lower agent.learning_rate (or agent.max_grad_norm), or set env.normalize_obs / env.normalize_reward"


class Agent:
    """What the loop needs from an agent; the agents subclass it.

    model: the network the evaluation plays greedily and the runner keeps and serves.
    steps: environment steps so far (the x axis of every logged point).
    """

    model = None
    steps = 0

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        """Build envs and buffers; returns the step budget the agent will run (PPO rounds it
        to whole updates). `every` is the evaluation cadence, for agents that log on it."""
        raise NotImplementedError

    def learn(self) -> dict:
        """Collect and update for one of the agent's own units; that unit's metrics."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the envs."""

    def summary(self) -> dict:
        """Metrics about the whole run with their full MLflow names (the bandit's per-method
        results), logged once at the last step."""
        return {}

    @property
    def seen(self) -> int:
        """Environment steps trained on (the bandit counts every pull of every run)."""
        return self.steps


class Clock:
    """Training wall time without the evaluations (what speed comparisons count)."""

    def __init__(self):
        self.start, self.excluded = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def timed(self, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.excluded += time.perf_counter() - t


def record(history: dict, logs: dict) -> None:
    """Append one row; names missing this time (the evaluation runs every few units) get NaN."""
    n = len(next(iter(history.values()), []))
    for k in logs:
        history.setdefault(k, [math.nan] * n)
    for k, v in history.items():
        v.append(float(logs.get(k, math.nan)))


def learn(agent: Agent, run, factory, seed: int, total_steps: int, every: int, evaluate) -> Fit:
    """Train `agent` for `total_steps` environment steps under the run handle `run`; `evaluate()`
    is the greedy mean return on the validation episodes. Returns the Fit (history with
    Keras-style names, one row per unit, at environment steps)."""
    budget = agent.start(factory, int(seed), int(total_steps), int(every))
    model = agent.model
    run.progress(budget, "steps")
    run.begin(model)
    history: dict[str, list] = {}
    steps: list[int] = []
    clock, next_eval, evaluations = Clock(), int(every), 0
    try:
        while True:
            logs = agent.learn()
            step = agent.steps
            _check_finite(logs, step)
            logs["seconds"] = clock.seconds()
            logs["steps_per_second"] = step / max(logs["seconds"], 1e-9)
            last = step >= budget
            if step >= next_eval or last:
                while next_eval <= step:
                    next_eval += int(every)
                logs["val_mean_return"] = clock.timed(evaluate)
                record(history, logs)
                clock.timed(partial(run.end_epoch, evaluations, step, logs))  # best copy, callbacks
                evaluations += 1
            else:
                record(history, logs)
                run.log_keras(step, logs)
            steps.append(step)
            run.advance(step, {k.removeprefix("val_"): logs[k] for k in SHOWN if k in logs})
            if last or run.should_stop or getattr(model, "stop_training", False):
                break
    finally:
        agent.close()
    run.end()
    if summary := agent.summary():
        run.log(steps[-1], summary)
    return run.fit_result(history, unit="update", steps=steps, seen=agent.seen)


def _check_finite(logs: dict, step: int) -> None:
    """A loss that became NaN or infinite fails the run at that step (as the NaN guard does for fit)."""
    for k, v in logs.items():
        if "loss" in k and not math.isfinite(float(v)):
            raise DlrunError(f"{k} became {'NaN' if math.isnan(float(v)) else 'infinite'} at environment step "
                             f"{step}", NAN_HINT)

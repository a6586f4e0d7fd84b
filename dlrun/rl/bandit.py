"""The course's k-armed bandit: greedy, epsilon-greedy and UCB action values with incremental means.

Each method plays `runs` independent runs (reset seeds seed, seed+1, ...) of one env episode
(dlrun/Bandit-v0: `steps` pulls); all methods see the same seeds. Per method, the run-averaged
reward and the fraction of pulls of the best arm are logged every `log_every` pulls, and at the
end the mean reward over all pulls and the % of optimal actions (`bandit/<method>/...`). The
served policy is the `serve` method's estimates averaged over its runs (a one-state Q table):
meaningful when the env keeps one problem (`env.kwargs.means_seed`), as env=bandit does.
The numpy loop is hand-written: a bandit is a few array lookups per pull, and no library offers
these course algorithms.
"""

from __future__ import annotations

import math
import time

import numpy as np

from dlrun.rl.ppo import record

METHODS = ("greedy", "epsilon", "ucb")


def incremental_mean(q: float, n: int, reward: float) -> float:
    """Q_n = Q_{n-1} + (R_n - Q_{n-1}) / n: the sample mean of n rewards without storing them."""
    return q + (reward - q) / n


def choose(method: str, q: np.ndarray, n: np.ndarray, t: int, rng, epsilon: float, c: float) -> int:
    """The arm to pull at time t (1-based) from estimates q and pull counts n; ties at random."""
    if method == "epsilon" and rng.random() < epsilon:
        return int(rng.integers(len(q)))
    if method == "ucb":
        if (n == 0).any():  # an untried arm has an infinite bonus
            return int(np.flatnonzero(n == 0)[0])
        q = q + c * np.sqrt(math.log(t) / n)
    return int(rng.choice(np.flatnonzero(q == q.max())))


def play(env, method: str, seed: int, epsilon: float, c: float):
    """One run: rewards, whether each pull was the best arm, and the final estimates."""
    _, info = env.reset(seed=seed)
    k = env.action_space.n
    rng = np.random.default_rng(seed)
    q, n = np.zeros(k), np.zeros(k, int)
    rewards, best, done, t = [], [], False, 0
    while not done:
        t += 1
        a = choose(method, q, n, t, rng, epsilon, c)
        _, r, term, trunc, _ = env.step(a)
        n[a] += 1
        q[a] = incremental_mean(q[a], n[a], r)
        rewards.append(r)
        best.append(a == info["best_arm"])
        done = term or trunc
    return np.array(rewards), np.array(best, float), q


class BanditAgent:
    def __init__(self, model, n_actions: int, cfg):
        self.model, self.cfg, self.k = model, cfg, int(n_actions)

    def train(self, factory, run, seed: int, evaluate):
        c = self.cfg
        methods = [str(m) for m in c.methods]
        if bad := [m for m in methods if m not in METHODS] + ([] if str(c.serve) in methods else [str(c.serve)]):
            from dlrun.errors import DlrunError

            raise DlrunError(f"agent.methods/serve: unknown or missing bandit method(s) {bad}",
                             f"choose from {', '.join(METHODS)}; serve must be one of methods")
        env = factory()
        runs, every = int(c.runs), int(c.log_every)
        run.progress(runs * len(methods), "runs")
        results, start = {}, time.perf_counter()
        for i, method in enumerate(methods):
            played = [play(env, method, seed + j, float(c.epsilon), float(c.ucb_c)) for j in range(runs)]
            if run.should_stop:
                break
            rewards = np.stack([p[0] for p in played])  # (runs, steps)
            best = np.stack([p[1] for p in played])
            results[method] = (rewards.mean(axis=0), best.mean(axis=0), np.mean([p[2] for p in played], axis=0))
            run.advance((i + 1) * runs, {"mean_reward": float(rewards.mean())})
        steps = len(next(iter(results.values()))[0])
        final = {}
        for method, (r, b, _) in results.items():
            final[f"bandit/{method}/mean_reward"] = float(r.mean())
            final[f"bandit/{method}/optimal_action_pct"] = 100.0 * float(b.mean())
        self.model.get_layer("q_table").set_weights([results[str(c.serve)][2][None].astype(np.float32)])
        final["val/mean_return"] = evaluate()
        final["train/seconds"] = time.perf_counter() - start
        run.keep_best(self.model, final["val/mean_return"], steps)
        history: dict[str, list] = {}
        steps_log = list(range(every, steps + 1, every)) or [steps]
        for t in steps_log:  # run-averaged curves, each point over the `every` pulls up to t
            m = {}
            for method, (r, b, _) in results.items():
                m[f"train/{method}/avg_reward"] = float(r[max(0, t - every):t].mean())
                m[f"train/{method}/optimal_action_pct"] = 100.0 * float(b[max(0, t - every):t].mean())
            if t == steps_log[-1]:
                m.update(final)
            run.log(t, m)
            record(history, m)
        self.results = results
        return history, steps_log, steps * runs * len(results)

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

import numpy as np

from dlrun.rl.learn import Agent

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


class BanditAgent(Agent):
    """Plays every method's runs at the first `learn()`; each call then hands the loop the next
    point of the run-averaged curves (every `log_every` pulls), so the steps are pulls."""

    def __init__(self, model, n_actions: int, cfg):
        self.model, self.cfg, self.k = model, cfg, int(n_actions)
        self.methods = [str(m) for m in cfg.methods]
        if bad := [m for m in self.methods if m not in METHODS] + ([] if str(cfg.serve) in self.methods
                                                                  else [str(cfg.serve)]):
            from dlrun.errors import DlrunError

            raise DlrunError(f"agent.methods/serve: unknown or missing bandit method(s) {bad}",
                             f"choose from {', '.join(METHODS)}; serve must be one of methods")

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        self.env, self.seed, self.results = factory(), seed, None
        pulls, log_every = int(self.env.unwrapped.steps), int(self.cfg.log_every)
        self.points = list(range(log_every, pulls + 1, log_every)) or [pulls]
        self.steps, self.k_point = 0, 0
        return self.points[-1]

    def learn(self) -> dict:
        c = self.cfg
        if self.results is None:
            self.results = {}
            for method in self.methods:
                played = [play(self.env, method, self.seed + j, float(c.epsilon), float(c.ucb_c))
                          for j in range(int(c.runs))]
                rewards = np.stack([p[0] for p in played])  # (runs, steps)
                best = np.stack([p[1] for p in played])
                self.results[method] = (rewards.mean(axis=0), best.mean(axis=0),
                                        np.mean([p[2] for p in played], axis=0))
            q = self.results[str(c.serve)][2]
            self.model.get_layer("q_table").set_weights([q[None].astype(np.float32)])
        t, every = self.points[self.k_point], int(c.log_every)
        self.k_point += 1
        self.steps = t
        m = {}
        for method, (r, b, _) in self.results.items():  # each point over the `every` pulls up to t
            m[f"{method}/avg_reward"] = float(r[max(0, t - every):t].mean())
            m[f"{method}/optimal_action_pct"] = 100.0 * float(b[max(0, t - every):t].mean())
        return m

    def summary(self) -> dict:
        final = {}
        for method, (r, b, _) in (self.results or {}).items():
            final[f"bandit/{method}/mean_reward"] = float(r.mean())
            final[f"bandit/{method}/optimal_action_pct"] = 100.0 * float(b.mean())
        return final

    @property
    def seen(self) -> int:
        return self.points[-1] * int(self.cfg.runs) * len(self.results or {})

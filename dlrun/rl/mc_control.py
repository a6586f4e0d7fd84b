"""Tabular Monte Carlo control with a constant step size (the course's MC control).

Play one whole episode with the epsilon-greedy policy of the current Q table, then walk it
backwards, G = r + gamma * G, and move each visited Q(s, a) towards its return:
Q(s, a) += alpha * (G - Q(s, a)). Every-visit updates every occurrence of (s, a) in the episode;
first-visit only its first. Exploration (epsilon schedule, or UCB) is TabularQ's.
"""

from __future__ import annotations

import numpy as np

from dlrun.rl.tabular import TabularQ


def mc_update(q: np.ndarray, episode, alpha: float, gamma: float, first_visit: bool = False) -> list[float]:
    """Apply constant-alpha MC updates for one finished episode [(s, a, r), ...] to `q` in place.
    Returns the increments alpha * (G - Q), in episode order (the course lists them this way)."""
    g, deltas = 0.0, [0.0] * len(episode)
    first = {}
    for t, (s, a, _) in enumerate(episode):
        first.setdefault((s, a), t)
    for t in reversed(range(len(episode))):
        s, a, r = episode[t]
        g = r + gamma * g
        if first_visit and first[(s, a)] != t:
            continue
        deltas[t] = alpha * (g - q[s, a])
        q[s, a] += deltas[t]
    return deltas


class MCControl(TabularQ):
    """TabularQ's schedule and exploration; each episode is played whole, then learned from."""

    def episode_of_learning(self) -> float:
        c, env, rng = self.cfg, self.env, self.rng
        s, _ = env.reset(seed=self.seed + self.episode)
        self.eps = eps = self.epsilon()
        trajectory, done = [], False
        while not done and self.steps < self.total:
            a = self._choose(int(s), eps, self.steps, rng)
            s2, r, term, trunc, _ = env.step(a)
            trajectory.append((int(s), a, float(r)))
            self.counts[int(s), a] += 1
            self.steps += 1
            done = term or trunc
            s = s2
        mc_update(self.q, trajectory, float(c.alpha), float(c.gamma), str(c.visits) == "first")
        return sum(r for _, _, r in trajectory)

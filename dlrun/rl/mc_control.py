"""Tabular Monte Carlo control with a constant step size (the course's MC control).

Play one whole episode with the epsilon-greedy policy of the current Q table, then walk it
backwards, G = r + gamma * G, and move each visited Q(s, a) towards its return:
Q(s, a) += alpha * (G - Q(s, a)). Every-visit updates every occurrence of (s, a) in the episode;
first-visit only its first. Exploration (epsilon schedule, or UCB) is TabularQ's.
"""

from __future__ import annotations

import time

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
    def train(self, factory, run, total_steps: int, seed: int, evaluate, eval_every: int):
        c = self.cfg
        env = factory()
        rng = np.random.default_rng(seed)
        alpha, gamma, first_visit = float(c.alpha), float(c.gamma), str(c.visits) == "first"
        eps0, eps1, decay = float(c.epsilon_start), float(c.epsilon_end), float(c.epsilon_decay_fraction)
        history: dict[str, list] = {}
        steps_log: list[int] = []
        returns: list[float] = []
        run.progress(total_steps, "steps")
        step, episode, next_eval, start = 0, 0, eval_every, time.perf_counter()
        while step < total_steps and not run.should_stop:
            s, _ = env.reset(seed=seed + episode)
            eps = max(eps1, eps0 - (eps0 - eps1) * step / max(1.0, decay * total_steps))
            trajectory, done = [], False
            while not done and step < total_steps:
                a = self._choose(int(s), eps, step, rng)
                s2, r, term, trunc, _ = env.step(a)
                trajectory.append((int(s), a, float(r)))
                self.counts[int(s), a] += 1
                step += 1
                done = term or trunc
                s = s2
            mc_update(self.q, trajectory, alpha, gamma, first_visit)
            episode += 1
            returns.append(sum(r for _, _, r in trajectory))
            if step >= next_eval or step >= total_steps:
                next_eval += eval_every
                self._report(run, history, steps_log, step, returns, eps, episode, start, evaluate)
        self.sync()
        return history, steps_log, step

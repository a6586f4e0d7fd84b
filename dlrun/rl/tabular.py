"""Tabular agents on discrete-state envs: Q-learning and SARSA (epsilon-greedy, or UCB exploration),
and dynamic programming (value iteration, policy iteration) for envs with a known model `P`.
The Q table lives in numpy while learning (one cell per update: a Keras call per step would be
thousands of times slower) and is copied into the Keras Q-table model that is served."""

from __future__ import annotations

import math

import numpy as np

from dlrun.rl.envs import policy_evaluation, value_iteration
from dlrun.rl.learn import Agent


def td_target(r: float, q_next: np.ndarray, a_next: int | None, gamma: float, done: bool) -> float:
    """Q-learning (a_next None: max over actions) or SARSA (the action taken next) target."""
    if done:
        return r
    return r + gamma * (q_next.max() if a_next is None else q_next[a_next])


class TabularQ(Agent):
    def __init__(self, model, n_states: int, n_actions: int, cfg):
        self.model, self.cfg = model, cfg
        self.q = np.zeros((n_states, n_actions))
        self.counts = np.zeros((n_states, n_actions))

    def _choose(self, s: int, eps: float, t: int, rng) -> int:
        if self.cfg.exploration == "ucb":
            n = self.counts[s]
            if (n == 0).any():
                return int(np.flatnonzero(n == 0)[0])
            return int(np.argmax(self.q[s] + float(self.cfg.ucb_c) * np.sqrt(math.log(t + 1) / n)))
        if rng.random() < eps:
            return int(rng.integers(self.q.shape[1]))
        best = np.flatnonzero(self.q[s] == self.q[s].max())
        return int(rng.choice(best))

    def sync(self):
        self.model.get_layer("q_table").set_weights([self.q.astype(np.float32)])

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        """Tabular agents log on the evaluation cadence `every` (whole episodes)."""
        self.env, self.seed, self.rng = factory(), seed, np.random.default_rng(seed)
        self.total, self.every, self.next_log = int(total_steps), int(every), int(every)
        self.steps, self.episode, self.returns, self.eps = 0, 0, [], 1.0
        return self.total

    def learn(self) -> dict:
        """Whole episodes until the next logged point; the table goes into the served model."""
        while self.steps < min(self.next_log, self.total):
            self.returns.append(self.episode_of_learning())
            self.episode += 1
        while self.next_log <= self.steps:
            self.next_log += self.every
        self.sync()
        return {"episode_return": float(np.mean(self.returns[-50:])), "epsilon": self.eps,
                "episodes": self.episode}

    def epsilon(self) -> float:
        c = self.cfg
        eps0, eps1, decay = float(c.epsilon_start), float(c.epsilon_end), float(c.epsilon_decay_fraction)
        return max(eps1, eps0 - (eps0 - eps1) * self.steps / max(1.0, decay * self.total))

    def episode_of_learning(self) -> float:
        """One Q-learning or SARSA episode (TD updates at every step); its return."""
        c, env, rng = self.cfg, self.env, self.rng
        alpha, gamma, sarsa = float(c.alpha), float(c.gamma), c.name == "sarsa"
        s, _ = env.reset(seed=self.seed + self.episode)
        self.eps = eps = self.epsilon()
        a = self._choose(int(s), eps, self.steps, rng)
        total, done = 0.0, False
        while not done and self.steps < self.total:
            s2, r, term, trunc, _ = env.step(a)
            self.steps += 1
            total += r
            done = term or trunc
            a2 = self._choose(int(s2), eps, self.steps, rng)
            target = td_target(r, self.q[int(s2)], a2 if sarsa else None, gamma, term)
            self.q[int(s), a] += alpha * (target - self.q[int(s), a])
            self.counts[int(s), a] += 1
            s, a = s2, a2
        return total


class DynamicProgramming(Agent):
    """Value iteration or policy iteration on the env's model; the greedy policy as a Q table.
    One `learn()` solves it (no environment steps)."""

    def __init__(self, model, cfg):
        self.model, self.cfg = model, cfg

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        self.env = factory()
        if not hasattr(self.env.unwrapped, "P"):
            from dlrun.errors import DlrunError

            raise DlrunError(f"agent={self.cfg.name} needs an env with a known model (P): GridWorld, SuttonGrid, "
                             "FrozenLake, Taxi")
        return 0

    def learn(self) -> dict:
        env, gamma = self.env, float(self.cfg.gamma)
        m = {}
        if self.cfg.name == "value_iteration":
            v, _, q = value_iteration(env, gamma)
        else:
            v, q, k = policy_iteration(env, gamma, int(self.cfg.eval_sweeps))
            m["policy_iterations"] = float(k)
        self.model.get_layer("q_table").set_weights([q.astype(np.float32)])
        m["start_value"] = float(v[env.unwrapped.s])
        return m


def policy_iteration(env, gamma: float = 1.0, eval_sweeps: int = 1000, max_iter: int = 100):
    """Policy iteration from the uniform random policy: iterative evaluation, greedy improvement,
    until the greedy policy stops changing. Returns values, Q and the number of improvements."""
    P = env.unwrapped.P
    n_s, n_a = len(P), len(P[0])
    policy = np.full((n_s, n_a), 1.0 / n_a)
    v = np.zeros(n_s)
    for k in range(1, max_iter + 1):
        v = policy_evaluation(env, policy, gamma, eval_sweeps, v)
        q = np.array([[sum(p * (r + gamma * v[n] * (not d)) for p, n, r, d in P[s][a]) for a in range(n_a)]
                      for s in range(n_s)])
        new = np.eye(n_a)[q.argmax(axis=1)]
        if np.array_equal(new, policy):
            return v, q, k
        policy = new
    return v, q, max_iter

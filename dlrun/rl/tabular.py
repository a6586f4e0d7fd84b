"""Tabular agents on discrete-state envs: Q-learning and SARSA (epsilon-greedy, or UCB exploration),
and dynamic programming (value iteration, policy iteration) for envs with a known model `P`.
The Q table lives in numpy while learning (one cell per update: a Keras call per step would be
thousands of times slower) and is copied into the Keras Q-table model that is served."""

from __future__ import annotations

import math
import time

import numpy as np

from dlrun.rl.envs import policy_evaluation, value_iteration


def td_target(r: float, q_next: np.ndarray, a_next: int | None, gamma: float, done: bool) -> float:
    """Q-learning (a_next None: max over actions) or SARSA (the action taken next) target."""
    if done:
        return r
    return r + gamma * (q_next.max() if a_next is None else q_next[a_next])


class TabularQ:
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

    def _report(self, run, history, steps_log, step, returns, eps, episode, start, evaluate):
        """A logged point: the table goes into the model, which is evaluated (every point)."""
        from dlrun.rl.ppo import log_point

        self.sync()
        m = {"train/episode_return": float(np.mean(returns[-50:])), "train/epsilon": eps,
             "train/episodes": episode, "train/steps_per_second": step / (time.perf_counter() - start)}
        log_point(run, history, steps_log, step, m, self.model, evaluate, shown=("val/mean_return",))

    def train(self, factory, run, total_steps: int, seed: int, evaluate, eval_every: int):
        c = self.cfg
        env = factory()
        rng = np.random.default_rng(seed)
        alpha, gamma, sarsa = float(c.alpha), float(c.gamma), c.name == "sarsa"
        eps0, eps1, decay = float(c.epsilon_start), float(c.epsilon_end), float(c.epsilon_decay_fraction)
        history: dict[str, list] = {}
        steps_log: list[int] = []
        run.progress(total_steps, "steps")
        step, episode, next_eval, start = 0, 0, eval_every, time.perf_counter()
        returns: list[float] = []

        while step < total_steps and not run.should_stop:
            s, _ = env.reset(seed=seed + episode)
            eps = max(eps1, eps0 - (eps0 - eps1) * step / max(1.0, decay * total_steps))
            a = self._choose(int(s), eps, step, rng)
            total, done = 0.0, False
            while not done and step < total_steps:
                s2, r, term, trunc, _ = env.step(a)
                step += 1
                total += r
                done = term or trunc
                a2 = self._choose(int(s2), eps, step, rng)
                target = td_target(r, self.q[int(s2)], a2 if sarsa else None, gamma, term)
                self.q[int(s), a] += alpha * (target - self.q[int(s), a])
                self.counts[int(s), a] += 1
                s, a = s2, a2
            episode += 1
            returns.append(total)
            if step >= next_eval or step >= total_steps:
                next_eval += eval_every
                self._report(run, history, steps_log, step, returns, eps, episode, start, evaluate)
        self.sync()
        return history, steps_log, step


class DynamicProgramming:
    """Value iteration or policy iteration on the env's model; the greedy policy as a Q table."""

    def __init__(self, model, cfg):
        self.model, self.cfg = model, cfg

    def train(self, factory, run, evaluate):
        env = factory()
        if not hasattr(env.unwrapped, "P"):
            from dlrun.errors import DlrunError

            raise DlrunError(f"agent={self.cfg.name} needs an env with a known model (P): GridWorld, SuttonGrid, "
                             "FrozenLake, Taxi")
        gamma = float(self.cfg.gamma)
        history: dict[str, list] = {}
        if self.cfg.name == "value_iteration":
            v, _, q = value_iteration(env, gamma)
        else:
            v, q, k = policy_iteration(env, gamma, int(self.cfg.eval_sweeps))
            history["policy_iterations"] = [float(k)]
        self.model.get_layer("q_table").set_weights([q.astype(np.float32)])
        run.progress(1, "solve")
        value = evaluate()
        run.keep_best(self.model, value, 0)
        run.log(0, {"val/mean_return": value, "train/start_value": float(v[env.unwrapped.s])})
        run.advance(1, {"mean_return": value})
        history["val/mean_return"] = [value]
        return history, [0], 0, v


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

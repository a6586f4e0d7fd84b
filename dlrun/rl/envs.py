"""dlrun's gymnasium environments and their exact baselines.

- dlrun/Orso-v1: the course's bear-and-honey graph (../shared/RL_BEAR.md), with `optimal_return`
  (shortest paths + the best visiting order of the six pots, per placement).
- dlrun/GridWorld-v0: the course's 4x5 grid (+1 / -1 terminals, -0.1 per step, optional slip),
  with a transition model `P` (FrozenLake's convention) for value iteration.
- dlrun/SuttonGrid-v0: Sutton & Barto's 4x4 grid (terminal corners, -1 per step, gamma 1).
- dlrun/Bandit-v0: k Gaussian arms with seeded means.
"""

from __future__ import annotations

import difflib
import itertools
from functools import lru_cache

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dlrun.errors import DlrunError

# -- Orso ------------------------------------------------------------------------------------
NODES = ["S", "A", "B", "C", "D", "E", "F", "G", "H", "K", "L", "M", "N", "O"]
_EDGES = {  # node: [(neighbour, cost)] in action order (RL_BEAR.md)
    "S": [("A", 300), ("B", 100), ("C", 200)],
    "A": [("S", 300), ("B", 100), ("E", 100), ("D", 100)],
    "B": [("S", 100), ("A", 100), ("C", 50), ("K", 200)],
    "C": [("S", 200), ("B", 50), ("M", 100), ("L", 200)],
    "D": [("A", 100), ("F", 50)],
    "E": [("A", 100), ("F", 100), ("H", 100)],
    "F": [("D", 50), ("E", 100), ("G", 200)],
    "G": [("F", 200), ("O", 300)],
    "H": [("E", 100), ("K", 300)],
    "K": [("B", 200), ("H", 300)],
    "L": [("C", 200), ("M", 50)],
    "M": [("C", 100), ("L", 50), ("N", 100)],
    "N": [("M", 100), ("O", 100)],
    "O": [("N", 100), ("G", 300)],
}
EDGES = [[(NODES.index(n), c) for n, c in _EDGES[name]] for name in NODES]
N_POTS, POT, NO_EDGE = 6, 1000.0, -1000.0


@lru_cache(maxsize=1)
def shortest_paths() -> np.ndarray:
    """All-pairs walking costs (Floyd-Warshall; 14 nodes, so a plain numpy loop)."""
    n = len(NODES)
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    for i, edges in enumerate(EDGES):
        for j, c in edges:
            d[i, j] = min(d[i, j], c)
    for k in range(n):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


@lru_cache(maxsize=1)
def _orders() -> np.ndarray:
    return np.array(list(itertools.permutations(range(N_POTS))))


def optimal_cost(pots) -> float:
    """The cheapest closed walk from S through every pot node and back (exhaustive over orders)."""
    d = shortest_paths()
    p = np.asarray(sorted(pots))[_orders()]  # (720, k)
    cost = d[0, p[:, 0]] + d[p[:, -1], 0] + d[p[:, :-1], p[:, 1:]].sum(axis=1)
    return float(cost.min())


def optimal_return(pots) -> float:
    """The exact best return of an Orso episode with pots on `pots` (node indices)."""
    total = POT * len(pots)
    return (total - optimal_cost(pots)) / total


class Orso(gym.Env):
    """The bear leaves the cave S, collects six honey pots and returns (RL_BEAR.md)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, partial_obs: bool = False, noop_action: bool = False, invalid_penalty: float = 1000.0,
                 render_mode=None):
        self.partial_obs, self.noop_action, self.invalid_penalty = partial_obs, noop_action, float(invalid_penalty)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(5 if noop_action else 4)
        size = 9 if partial_obs else 5 + len(NODES)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.honey = np.zeros(len(NODES))
        self.node, self.pots, self.path = 0, [], [0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pots = sorted(int(i) + 1 for i in self.np_random.choice(len(NODES) - 1, N_POTS, replace=False))
        self.honey = np.zeros(len(NODES))
        self.honey[self.pots] = POT
        self.total = POT * N_POTS
        self.node, self.path = 0, [0]
        return self._obs(), {"pots": list(self.pots), "optimal_return": optimal_return(self.pots)}

    def _obs(self) -> np.ndarray:
        edges = EDGES[self.node]
        p = [self.honey[j] - c for j, c in edges] + [NO_EDGE] * (4 - len(edges))
        if self.partial_obs:
            seen = [self.honey[j] for j, _ in edges] + [0.0] * (4 - len(edges))
            return np.array([self.node, *p, *seen], np.float32)
        return np.array([self.node, *p, *self.honey], np.float32)

    def step(self, action):
        a = int(action)
        edges = EDGES[self.node]
        if self.noop_action and a == 4:
            reward = 0.0
        elif a >= len(edges):
            reward = -self.invalid_penalty
        else:
            j, cost = edges[a]
            reward = self.honey[j] - cost
            self.honey[j] = 0.0
            self.node = j
            self.path.append(j)
        terminated = self.node == 0 and not self.honey.any()
        return self._obs(), float(reward / self.total), bool(terminated), False, {}

    def render(self):
        return None  # the task draws the greedy path with matplotlib (see dlrun/tasks/rl.py)


# -- grids -----------------------------------------------------------------------------------
MOVES = [(-1, 0), (0, 1), (1, 0), (0, -1)]  # up, right, down, left


class _TabularGrid(gym.Env):
    """A grid with a known model: P[s][a] = [(prob, next_state, reward, terminated)]."""

    rows = cols = 0
    start = (0, 0)
    walls: tuple = ()
    terminals: dict = {}
    step_reward = -1.0

    def __init__(self, slip: float = 0.0):
        self.slip = float(slip)
        self.nS, self.nA = self.rows * self.cols, 4
        self.observation_space, self.action_space = spaces.Discrete(self.nS), spaces.Discrete(4)
        self.P = {s: {a: self._transitions(s, a) for a in range(4)} for s in range(self.nS)}
        self.s = self._index(self.start)

    def _index(self, rc) -> int:
        return rc[0] * self.cols + rc[1]

    def _move(self, s: int, a: int) -> int:
        r, c = divmod(s, self.cols)
        nr, nc = r + MOVES[a][0], c + MOVES[a][1]
        if not (0 <= nr < self.rows and 0 <= nc < self.cols) or (nr, nc) in self.walls:
            return s
        return self._index((nr, nc))

    def is_terminal(self, s: int) -> bool:
        return divmod(s, self.cols) in self.terminals

    def _transitions(self, s, a):
        if self.is_terminal(s) or divmod(s, self.cols) in self.walls:
            return [(1.0, s, 0.0, True)]
        outcomes = [(1.0 - self.slip, a)] + [(self.slip / 2, (a + k) % 4) for k in (1, 3)] if self.slip else [(1.0, a)]
        out = []
        for p, b in outcomes:
            n = self._move(s, b)
            out.append((p, n, float(self.terminals.get(divmod(n, self.cols), self.step_reward)), self.is_terminal(n)))
        return out

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self._index(self.start)
        return self.s, {}

    def step(self, action):
        trans = self.P[self.s][int(action)]
        i = self.np_random.choice(len(trans), p=[t[0] for t in trans]) if len(trans) > 1 else 0
        _, self.s, reward, done = trans[i]
        return self.s, reward, done, False, {}


class GridWorld(_TabularGrid):
    """The course's 4x5 grid: start (2,0), three walls, +1 at (0,4), -1 at (1,4), -0.1 per step."""

    rows, cols, start = 4, 5, (2, 0)
    walls = ((1, 1), (2, 1), (2, 3))
    terminals = {(0, 4): 1.0, (1, 4): -1.0}
    step_reward = -0.1


class SuttonGrid(_TabularGrid):
    """Sutton & Barto's 4x4 grid: terminal corners, -1 per step (gamma 1)."""

    rows, cols, start = 4, 4, (1, 1)
    terminals = {(0, 0): -1.0, (3, 3): -1.0}

    def reset(self, *, seed=None, options=None):  # a random non-terminal start, as in the book
        gym.Env.reset(self, seed=seed)
        self.s = int(self.np_random.integers(1, self.nS - 1))
        return self.s, {}


def value_iteration(env, gamma: float = 0.9, tol: float = 1e-10, sweeps: int | None = None):
    """Values and the greedy policy of a model-based env (`P`, FrozenLake's convention)."""
    P = env.unwrapped.P
    n_s, n_a = len(P), len(P[0])
    v = np.zeros(n_s)
    for k in itertools.count():
        q = np.array([[sum(p * (r + gamma * v[n] * (not d)) for p, n, r, d in P[s][a]) for a in range(n_a)]
                      for s in range(n_s)])
        new = q.max(axis=1)
        done = np.abs(new - v).max() < tol or (sweeps is not None and k + 1 >= sweeps)
        v = new
        if done:
            return v, q.argmax(axis=1), q


def policy_evaluation(env, policy: np.ndarray, gamma: float = 1.0, sweeps: int = 1, v=None):
    """Iterative policy evaluation (synchronous sweeps) of a stochastic policy[s, a]."""
    P = env.unwrapped.P
    v = np.zeros(len(P)) if v is None else v.copy()
    for _ in range(sweeps):
        v = np.array([sum(policy[s, a] * sum(p * (r + gamma * v[n] * (not d)) for p, n, r, d in P[s][a])
                          for a in range(len(P[s]))) for s in range(len(P))])
    return v


# -- bandit ----------------------------------------------------------------------------------
class Bandit(gym.Env):
    """k arms with N(mean_i, 1) rewards. The means are drawn N(0, 1) from the reset seed (a new
    problem per episode, Sutton & Barto's testbed) or, with `means_seed`, once from that seed (one
    fixed problem; the reset seed then only drives the reward noise). `info["optimal_return"]` is
    the expected return of always pulling the best arm."""

    def __init__(self, k: int = 5, steps: int = 500, means_seed: int | None = None):
        self.k, self.steps = int(k), int(steps)
        self.means_seed = None if means_seed is None else int(means_seed)
        self.observation_space, self.action_space = spaces.Discrete(1), spaces.Discrete(self.k)
        self.means = np.zeros(self.k)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.means_seed is None:
            self.means = self.np_random.normal(0.0, 1.0, self.k)
        else:
            self.means = np.random.default_rng(self.means_seed).normal(0.0, 1.0, self.k)
        self.t = 0
        return 0, {"best_mean": float(self.means.max()), "best_arm": int(self.means.argmax()),
                   "optimal_return": float(self.means.max() * self.steps)}

    def step(self, action):
        self.t += 1
        return 0, float(self.np_random.normal(self.means[int(action)], 1.0)), False, self.t >= self.steps, {}


# -- registration ----------------------------------------------------------------------------
ENVS = {"dlrun/Orso-v1": (Orso, 25), "dlrun/GridWorld-v0": (GridWorld, 100),
        "dlrun/SuttonGrid-v0": (SuttonGrid, 100), "dlrun/Bandit-v0": (Bandit, None)}


def register_envs() -> None:
    for env_id, (cls, limit) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"{cls.__module__}:{cls.__name__}", max_episode_steps=limit)


def make(env_id: str, **kwargs):
    """gymnasium.make with dlrun's one-line error for unknown ids (close matches listed)."""
    register_envs()
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.5)
        raise DlrunError(f"unknown environment id '{env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""),
                         "any gymnasium id works (env.id=CartPole-v1), or dlrun/Orso-v1, dlrun/GridWorld-v0, "
                         "dlrun/SuttonGrid-v0, dlrun/Bandit-v0")
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise DlrunError(f"environment '{env_id}' needs a package that is not installed: {e}") from None

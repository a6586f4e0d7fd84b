"""Environment plumbing shared by the agents: env factories, vector envs, batched evaluation."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from dlrun.rl.envs import make


def env_factory(env_cfg) -> Callable[[], gym.Env]:
    """A no-argument factory of the configured env (gymnasium id + keyword arguments)."""
    kwargs = dict(env_cfg.get("kwargs") or {})
    env_id = str(env_cfg.id)
    make(env_id, **kwargs).close()  # fail early, with the one-line error for unknown ids

    def factory():
        return make(env_id, **kwargs)

    return factory


def vector_env(factory, num_envs: int, asynchronous: bool = False):
    """gymnasium.vector env; SAME_STEP autoreset, so a finished episode's last observation is in
    info["final_obs"] (for bootstrapping truncated episodes) and the returned one is the new start."""
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return cls([factory] * int(num_envs), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def obs_dim(space) -> int:
    return 1 if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape))


def as_rows(obs, space) -> np.ndarray:
    """Observations as float32 rows (discrete states become one column holding the index)."""
    return np.asarray(obs, np.float32).reshape(len(obs), obs_dim(space))


def run_episodes(factory, seeds, act: Callable[[np.ndarray], np.ndarray], max_steps: int = 100_000):
    """Returns, lengths and infos of one episode per seed, all envs stepped together so that `act`
    sees a batch of observation rows (a Keras policy is called once per step, not once per env)."""
    envs = [factory() for _ in seeds]
    first = [e.reset(seed=int(s)) for e, s in zip(envs, seeds, strict=True)]
    obs = [o for o, _ in first]
    infos = [i for _, i in first]
    space = envs[0].observation_space
    returns, lengths = np.zeros(len(envs)), np.zeros(len(envs), int)
    active = np.ones(len(envs), bool)
    for _ in range(max_steps):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        actions = act(as_rows([obs[i] for i in idx], space))
        for i, a in zip(idx, actions, strict=True):
            space_a = envs[i].action_space
            if isinstance(space_a, gym.spaces.Box):
                a = np.clip(a, space_a.low, space_a.high)
            obs[i], r, term, trunc, _ = envs[i].step(a)
            returns[i] += r
            lengths[i] += 1
            if term or trunc:
                active[i] = False
    for e in envs:
        e.close()
    return returns, lengths, infos


def random_actions(factory, seed: int):
    space = factory().action_space
    space.seed(int(seed))
    return lambda rows: [space.sample() for _ in range(len(rows))]

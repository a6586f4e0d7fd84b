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


def vector_env(factory, num_envs: int, asynchronous: bool = False, normalize_reward: bool = False,
               gamma: float = 0.99):
    """gymnasium.vector env; SAME_STEP autoreset, so a finished episode's last observation is in
    info["final_obs"] (for bootstrapping truncated episodes) and the returned one is the new start.

    Always wrapped in gymnasium's RecordEpisodeStatistics, so info["episode"] (read it with
    `finished_episodes`) holds each finished episode's return and length in the env's own units;
    with `normalize_reward` gymnasium's NormalizeReward(gamma) goes OUTSIDE it: the agent learns
    from rewards scaled by the running std of the discounted return, the logs stay raw."""
    from gymnasium.wrappers.vector import NormalizeReward, RecordEpisodeStatistics

    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = RecordEpisodeStatistics(cls([factory] * int(num_envs), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    return NormalizeReward(envs, gamma=float(gamma)) if normalize_reward else envs


def training_env(factory, num_envs: int, env_cfg=None, gamma: float = 0.99):
    """The agents' training vector env from the env config (`vector`, `normalize_reward`)."""
    return vector_env(factory, num_envs, str(env_option(env_cfg, "vector")) == "async",
                      bool(env_option(env_cfg, "normalize_reward")), gamma)


def env_option(env_cfg, key: str):
    """`key` of an env config, else its default in the env schema (config.EnvConfig, the one place
    it is written): agents are also built with partial env configs (tests, scripts)."""
    from dataclasses import fields

    from dlrun.config import EnvConfig

    default = next(f.default for f in fields(EnvConfig) if f.name == key)
    return (env_cfg if env_cfg is not None else {}).get(key, default)


def finished_episodes(info) -> list[tuple[int, float, int]]:
    """(env index, raw return, length) of each episode that ended in this vector step, from
    RecordEpisodeStatistics' info["episode"] (raw even when the rewards are normalised)."""
    if "episode" not in info:
        return []
    ep = info["episode"]
    return [(int(i), float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(info["_episode"])]


class ObsNormalizer:
    """Running mean/variance of the raw observation rows the agent collects (gymnasium's
    RunningMeanStd), written into the "obs_norm" layer (dlrun/rl/nets.py ObsNorm) of each given
    model, so that the network, the saved model and the served policy normalise by themselves and
    keep taking raw observations. A no-op when the first model has no "obs_norm" layer."""

    def __init__(self, *models):
        self.layers = [m.get_layer("obs_norm") for m in models if has_layer(m, "obs_norm")]
        self.rms = None
        if self.layers:
            from gymnasium.wrappers.utils import RunningMeanStd

            first = models[0]
            # the layer sits after the "obs_scale" Rescaling: statistics of the rescaled rows
            self.scale = float(first.get_layer("obs_scale").scale) if has_layer(first, "obs_scale") else 1.0
            self.rms = RunningMeanStd(shape=(int(self.layers[0].mean.shape[0]),))

    @property
    def active(self) -> bool:
        return self.rms is not None

    def update(self, rows, write: bool = True) -> None:
        """Add a batch of raw observation rows (n, obs_dim) and (`write`) refresh the layers' weights."""
        if self.rms is None:
            return
        self.rms.update(np.asarray(rows, np.float64).reshape(len(rows), -1) * self.scale)
        if write:
            self.write()

    def write(self) -> None:
        """Copy the statistics into the layers (a TF assign: agents that add rows every env step
        write once per training phase)."""
        if self.rms is None:
            return
        mean, var = self.rms.mean.astype(np.float32), self.rms.var.astype(np.float32)
        for layer in self.layers:
            layer.mean.assign(mean)
            layer.var.assign(var)


def obs_normalizer(*models) -> ObsNormalizer:
    """`obs_normalizer(model[, critic, targets...]).update(rows)` after every collected batch."""
    return ObsNormalizer(*models)


def has_layer(model, name: str) -> bool:
    """Whether `model` has a layer called `name` (e.g. "obs_norm" with env.normalize_obs)."""
    return any(layer.name == name for layer in model.layers)


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


def episode_stats(finished: list, lengths: list, last: int = 20) -> dict:
    """Return and length of the last finished episodes (empty before the first one ends)."""
    recent = finished[-last:]
    if not recent:
        return {}
    return {"episode_return": float(np.mean(recent)), "return_min": float(np.min(recent)),
            "return_max": float(np.max(recent)), "episode_length": float(np.mean(lengths[-last:]))}
